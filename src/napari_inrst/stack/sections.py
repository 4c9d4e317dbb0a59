"""The section stack: ordered sections, a shared gene panel, normalization and transforms.

A :class:`SectionStack` holds one :class:`Section` per measured section. Each section keeps its
own AnnData (raw values in ``layers['counts']`` when they are counts, normalized values in ``X``),
its 2D coordinates in µm as read (``obsm['spatial']``), its z in µm, and a 3×3 homogeneous
transform from its input coordinates into the stack frame (identity until aligned).

No Qt and no torch here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from ..errors import InputError
from .normalize import TARGET_SUM, as_dense, highly_variable_genes

NORMALIZE_CHOICES = ("log1p", "none")
GENE_POLICIES = ("intersection", "union")


def apply_transform(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Apply a 3×3 homogeneous 2D transform to n×2 points."""
    m = np.asarray(matrix, dtype=np.float64)
    xy = np.asarray(xy, dtype=np.float64)
    return xy @ m[:2, :2].T + m[:2, 2]


def gene_positions(names: Sequence[str], genes, *, error: Callable[[str], Exception] = KeyError,
                   what: str = "this field") -> list[int]:
    """Gene names or indices (one or several) → positions in ``names``; ``error`` (naming the gene
    and, for a name, up to five similar ones) for an unknown gene or an index out of range."""
    if isinstance(genes, (str, int, np.integer)):
        genes = [genes]
    names = list(names)
    pos = {g: i for i, g in enumerate(names)}
    out = []
    for g in genes:
        if isinstance(g, (int, np.integer)):
            if not 0 <= int(g) < len(names):
                raise error(f"gene index {g} out of range (0…{len(names) - 1})")
            out.append(int(g))
        elif str(g) in pos:
            out.append(pos[str(g)])
        else:
            close = [n for n in names if n.lower().startswith(str(g).lower()[:3])][:5]
            hint = f"; similar: {', '.join(close)}" if close else ""
            raise error(f"gene '{g}' is not modeled by {what} ({len(names)} genes){hint}")
    return out


class PlacedSection:
    """Stack-frame coordinates of a section from its input coordinates (``xy_input``) and transform."""

    #: a smooth displacement in the input frame applied before the transform
    #: (:class:`napari_inrst.align.deform.Deformation`), or None
    deformation = None

    @property
    def xy(self) -> np.ndarray:
        """Coordinates in the stack frame (µm)."""
        d = self.deformation
        xy = self.xy_input if d is None or not d.enabled else d.apply(self.xy_input)
        return apply_transform(self.transform, xy)

    @property
    def xyz(self) -> np.ndarray:
        """n×3 coordinates (x, y, z) in the stack frame (µm)."""
        xy = self.xy
        return np.column_stack([xy, np.full(len(xy), self.z)])


@dataclass
class Section(PlacedSection):
    """One measured section."""

    name: str
    adata: object  # anndata.AnnData: X normalized (float32), layers['counts'] raw when counts
    z: float  # µm
    transform: np.ndarray = field(default_factory=lambda: np.eye(3))
    source: str = ""
    excluded: bool = False  # marked missing/damaged: kept for display, left out of training

    @property
    def n_obs(self) -> int:
        return self.adata.n_obs

    @property
    def xy_input(self) -> np.ndarray:
        """Coordinates as read (µm), before the transform."""
        return np.asarray(self.adata.obsm["spatial"], dtype=np.float64)

    @property
    def X(self) -> np.ndarray:
        """Normalized expression, dense float32 (n × genes of the stack)."""
        return as_dense(self.adata.X)

    def spot_diameter_um(self) -> float:
        """Spot/cell diameter in µm: recorded in ``uns`` or estimated from nearest-neighbour spacing."""
        d = self.adata.uns.get("spot_diameter_um")
        if d is not None:
            return float(np.asarray(d).ravel()[0])
        return estimate_spacing(self.xy_input)


def estimate_spacing(xy: np.ndarray, sample: int = 2000, seed: int = 0) -> float:
    """Median nearest-neighbour distance of points (µm)."""
    from scipy.spatial import cKDTree

    xy = np.asarray(xy, dtype=np.float64)
    if len(xy) < 2:
        return 1.0
    rng = np.random.default_rng(seed)
    q = xy if len(xy) <= sample else xy[rng.choice(len(xy), sample, replace=False)]
    d, _ = cKDTree(xy).query(q, k=2)
    med = float(np.median(d[:, 1]))
    return med if med > 0 else 1.0


@dataclass
class StackBase:
    """What every stack offers over its ``sections`` (in memory or read lazily): names, z,
    genes, transforms, the training subset, stack-frame coordinates; the gene policy, unit factor
    and normalization it was built with, and its build report."""

    sections: list
    genes: list[str]
    normalize: str = "log1p"
    gene_policy: str = "intersection"
    unit_factor: float = 1.0
    report: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.sections)

    def __iter__(self):
        return iter(self.sections)

    def __getitem__(self, i):
        return self.sections[i]

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sections]

    @property
    def z(self) -> np.ndarray:
        return np.array([s.z for s in self.sections], dtype=np.float64)

    @property
    def n_genes(self) -> int:
        return len(self.genes)

    def gene_index(self, gene: str) -> int:
        try:
            return self.genes.index(gene)
        except ValueError:
            raise KeyError(f"gene '{gene}' is not in the stack's {self.n_genes} genes") from None

    def transforms(self) -> list[np.ndarray]:
        return [np.array(s.transform, dtype=np.float64) for s in self.sections]

    def set_transforms(self, matrices: Sequence[np.ndarray]):
        if len(matrices) != len(self.sections):
            raise ValueError(f"{len(matrices)} transforms for {len(self.sections)} sections")
        for s, m in zip(self.sections, matrices):
            m = np.asarray(m, dtype=np.float64)
            if m.shape != (3, 3):
                raise ValueError(f"transform of {s.name} must be 3×3, got {m.shape}")
            s.transform = m

    def training_sections(self) -> list[int]:
        return [i for i, s in enumerate(self.sections) if not s.excluded]

    def coords(self, indices: Iterable[int] | None = None) -> np.ndarray:
        """All (x, y, z) in the stack frame (µm), sections concatenated in order."""
        idx = range(len(self.sections)) if indices is None else indices
        return np.concatenate([self.sections[i].xyz for i in idx], axis=0)


@dataclass
class SectionStack(StackBase):
    """An ordered set of sections (:class:`Section`) sharing one gene panel in one normalization."""

    def select(self, indices: Iterable[int]) -> "SectionStack":
        """A stack with only the given sections (shared AnnData, copied transforms)."""
        idx = list(indices)
        secs = [Section(s.name, s.adata, s.z, s.transform.copy(), s.source, s.excluded)
                for s in (self.sections[i] for i in idx)]
        for new, i in zip(secs, idx):
            new.deformation = self.sections[i].deformation
        return SectionStack(secs, list(self.genes), self.normalize, self.gene_policy,
                            self.unit_factor, dict(self.report))

    def expression(self, indices: Iterable[int] | None = None) -> np.ndarray:
        """Normalized expression (float32), sections concatenated in order."""
        idx = range(len(self.sections)) if indices is None else indices
        return np.concatenate([self.sections[i].X for i in idx], axis=0)

    def section_of(self, indices: Iterable[int] | None = None) -> np.ndarray:
        """For each row of :meth:`coords`, the index of its section."""
        idx = range(len(self.sections)) if indices is None else indices
        return np.concatenate([np.full(self.sections[i].n_obs, i) for i in idx])

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(min, max) of (x, y, z) over all sections in the stack frame."""
        c = self.coords()
        return c.min(axis=0), c.max(axis=0)

    def summary(self) -> str:
        lines = [f"{len(self)} sections, {self.n_genes} genes ({self.gene_policy}), normalize={self.normalize}"]
        for s in self.sections:
            flag = " [excluded]" if s.excluded else ""
            lines.append(f"  {s.name}: z={s.z:g} µm, {s.n_obs} cells/spots{flag}")
        lines.extend(self.assumptions())
        return "\n".join(lines)

    def assumptions(self) -> list[str]:
        """One line per thing that was assumed rather than read from the files (z, units)."""
        out = []
        za = self.report.get("z_assumed")
        if za:
            out.append(f"z assumed: {za['spacing_um']:g} µm apart in file order (no z recorded in "
                       f"{', '.join(za['sections'])}) — set it in the Sections widget")
        if self.unit_factor != 1.0:
            out.append(f"coordinates × {self.unit_factor:g} → µm")
        sus = self.report.get("units_suspect")
        if sus and self.unit_factor == 1.0:
            out.append(f"coordinates: neighbouring spots {sus:.3g} units apart — array indices, not µm? "
                       "Set the unit factor in the Sections widget")
        return out

    # --- changes in place (the napari widgets keep the same stack object) ------------------
    def set_z(self, z: Sequence[float]):
        """Set every section's z (µm), in place. Distinct finite values, one per section."""
        zs = np.asarray(list(z), dtype=np.float64)
        if zs.shape != (len(self.sections),):
            raise InputError(None, f"{len(self.sections)} sections but {zs.size} z values; give one z per section")
        if not np.isfinite(zs).all():
            raise InputError(None, "z positions must be finite numbers")
        if len(np.unique(zs)) != len(zs):
            raise InputError(None, "two sections cannot share a z")
        for s, v in zip(self.sections, zs):
            s.z = float(v)
        self.report.pop("z_assumed", None)
        self.report["z_set_by_user"] = True

    def set_unit_factor(self, factor: float):
        """Coordinates as read × ``factor`` = µm (x, y and spot sizes; z is set in µm on its own).

        Rescales in place from the current factor; a transform's translation and a section's
        deformation grid scale with it."""
        factor = float(factor)
        if not np.isfinite(factor) or factor <= 0:
            raise InputError(None, f"the unit factor must be a positive number, got {factor}")
        r = factor / float(self.unit_factor)
        if r == 1.0:
            return
        for s in self.sections:
            s.adata.obsm["spatial"] = np.asarray(s.adata.obsm["spatial"], dtype=np.float64) * r
            if "spot_diameter_um" in s.adata.uns:
                s.adata.uns["spot_diameter_um"] = float(np.asarray(s.adata.uns["spot_diameter_um"]).ravel()[0]) * r
            m = np.array(s.transform, dtype=np.float64)
            m[:2, 2] *= r
            s.transform = m
            d = getattr(s, "deformation", None)  # its grid lives in the input frame (µm): scaled with it
            if d is not None:
                d.origin, d.spacing, d.coef = d.origin * r, d.spacing * r, d.coef * r
                d.max_disp_um *= r
        self.unit_factor = factor


def build_stack(
    adatas: Sequence,
    z: Sequence[float],
    *,
    names: Sequence[str] | None = None,
    sources: Sequence[str] | None = None,
    gene_policy: str = "intersection",
    normalize: str = "log1p",
    n_top_genes: int | None = None,
    unit_factor: float = 1.0,
    min_sections: int = 1,
    transforms: Sequence[np.ndarray] | None = None,
) -> SectionStack:
    """Assemble validated sections into a :class:`SectionStack`.

    ``gene_policy``: ``"intersection"`` (default) keeps genes measured in every section;
    ``"union"`` keeps all, filling genes a section did not measure with zeros. Both are reported
    in ``stack.report``. ``normalize``: ``"log1p"`` (log1p of counts per 10,000; counts must be
    non-negative) or ``"none"`` (values as given). ``n_top_genes`` keeps the most variable
    genes. ``unit_factor`` multiplies coordinates and z (for data not in µm). Raw values are kept
    in ``layers['counts']``. The input AnnData objects are not modified.
    """
    import anndata as ad
    import pandas as pd
    from scipy import sparse

    from ..io.validate import validate_section, validate_shared_genes, validate_stack_section, validate_z_precision

    n = len(adatas)
    names = list(names) if names is not None else [f"section_{i}" for i in range(n)]
    sources = list(sources) if sources is not None else list(names)
    if normalize not in NORMALIZE_CHOICES:
        raise InputError(None, f"normalize must be one of {NORMALIZE_CHOICES}, got '{normalize}'")
    if gene_policy not in GENE_POLICIES:
        raise InputError(None, f"gene_policy must be one of {GENE_POLICIES}, got '{gene_policy}'")
    if n < min_sections:
        raise InputError(", ".join(sources) or None,
                         f"a stack needs at least {min_sections} sections; got {n}")
    if len(z) != n:
        raise InputError(None, f"{n} sections but {len(z)} z positions; give one z per section")
    zs = np.asarray(z, dtype=np.float64) * float(unit_factor)
    if not np.isfinite(zs).all():
        raise InputError(None, "z positions must be finite numbers")
    for i in range(n):
        for j in range(i):
            if zs[i] == zs[j]:
                raise InputError(sources[i], f"has the same z ({zs[i]:g} µm) as {sources[j]}; "
                                             "two sections cannot share a z")
    validate_z_precision(zs, sources)
    counts = normalize == "log1p"
    for a, src in zip(adatas, sources):
        validate_section(a, src, counts_expected=counts)
        validate_stack_section(np.asarray(a.obsm["spatial"], dtype=np.float64) * float(unit_factor), src)

    gene_sets = [list(map(str, a.var_names)) for a in adatas]
    if gene_policy == "intersection":
        common = set(gene_sets[0]).intersection(*map(set, gene_sets[1:]))
        genes = [g for g in gene_sets[0] if g in common]
        if not genes:
            raise InputError(", ".join(sources), "no genes are shared between the sections "
                                                 "(gene_policy='intersection'); try gene_policy='union'")
    else:
        seen, genes = set(), []
        for gs in gene_sets:
            for g in gs:
                if g not in seen:
                    seen.add(g)
                    genes.append(g)
    validate_shared_genes(genes, sources, gene_policy)
    report = {
        "gene_policy": gene_policy,
        "genes_per_section": {nm: len(gs) for nm, gs in zip(names, gene_sets)},
        "n_genes_kept": len(genes),
        "n_genes_union": len(set().union(*map(set, gene_sets))),
        "n_genes_intersection": len(set(gene_sets[0]).intersection(*map(set, gene_sets[1:]))),
    }

    gene_pos = {g: k for k, g in enumerate(genes)}
    sections, normed = [], []
    for a, nm, src, zz in zip(adatas, names, sources, zs):
        X = a.X
        X = X.tocsr() if sparse.issparse(X) else np.asarray(X)
        cols = [gene_pos.get(g, -1) for g in map(str, a.var_names)]
        src_idx = np.array([k for k, c in enumerate(cols) if c >= 0], dtype=int)
        dst_idx = np.array([cols[k] for k in src_idx], dtype=int)
        if sparse.issparse(X) and np.unique(dst_idx).size == len(src_idx) == len(genes):  # all here: a gather
            order = np.empty(len(genes), dtype=int)
            order[dst_idx] = src_idx
            raw = (X if np.array_equal(order, np.arange(X.shape[1])) else X[:, order]).astype(np.float32)
        elif sparse.issparse(X):  # (no empty lil_matrix first: 1 s of interpreter lock per 200,000 rows)
            sub = X[:, src_idx].tocsc()
            perm = sparse.csr_matrix((np.ones(len(src_idx)), (np.arange(len(src_idx)), dst_idx)),
                                     shape=(len(src_idx), len(genes)))
            raw = (sub @ perm).tocsr().astype(np.float32)
        else:
            raw = np.zeros((a.n_obs, len(genes)), dtype=np.float32)
            raw[:, dst_idx] = np.asarray(X, dtype=np.float32)[:, src_idx]
        missing = len(genes) - len(src_idx)
        if normalize == "log1p":
            # library size over every gene measured in the section, not only kept ones
            tot = np.asarray(X.sum(axis=1)).ravel().astype(np.float64)
            scale = np.divide(TARGET_SUM, tot, out=np.zeros_like(tot), where=tot > 0)
            Xn = np.log1p(as_dense(raw) * scale[:, None].astype(np.float32)).astype(np.float32)
        else:
            Xn = as_dense(raw)
        normed.append(Xn)
        obs = a.obs.copy()
        obs.index = a.obs_names.astype(str)
        new = ad.AnnData(X=Xn, obs=obs, var=pd.DataFrame(index=pd.Index(genes, dtype=str)))
        new.layers["counts" if counts else "values"] = raw
        new.obsm["spatial"] = np.asarray(a.obsm["spatial"], dtype=np.float64) * float(unit_factor)
        for k, v in a.uns.items():
            if k in ("spot_diameter_um",):
                new.uns[k] = float(np.asarray(v).ravel()[0]) * float(unit_factor)
        new.uns["n_genes_missing"] = missing
        sections.append(Section(name=str(nm), adata=new, z=float(zz), source=str(src)))

    if n_top_genes is not None and n_top_genes < len(genes):
        keep = highly_variable_genes(np.concatenate(normed, axis=0), n_top_genes)
        genes = [genes[k] for k in keep]
        for s in sections:
            s.adata = s.adata[:, keep].copy()
        report["n_top_genes"] = int(n_top_genes)
        report["n_genes_kept"] = len(genes)

    if transforms is not None:
        stack = SectionStack(sections, genes, normalize, gene_policy, float(unit_factor), report)
        stack.set_transforms(transforms)
        return stack
    return SectionStack(sections, genes, normalize, gene_policy, float(unit_factor), report)


def stack_from_inputs(inputs, z: Sequence[float] | None = None, *, spacing: float = 10.0, **kwargs) -> SectionStack:
    """Build a stack from :class:`~napari_inrst.io.readers.SectionInput` objects.

    ``z`` as given, else what each file records, else ``index × spacing`` µm.
    """
    if z is None:
        recorded = [s.z for s in inputs]
        z = recorded if all(v is not None for v in recorded) else [i * spacing for i in range(len(inputs))]
    return build_stack([s.adata for s in inputs], z, names=[s.name for s in inputs],
                       sources=[s.source for s in inputs], **kwargs)
