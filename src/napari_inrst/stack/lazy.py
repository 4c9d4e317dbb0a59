"""Sections read lazily: AnnData in backed mode, expression streamed in row chunks.

For stacks too large to hold as dense arrays (atlases of 10^5–10^7 cells × thousands of genes).
Only the coordinates (n × 2), the cell names and the gene names are loaded; the expression
matrix stays on disk and is read, validated and normalized one chunk of rows at a time, so
memory is bounded by the chunk size, not by the data.

* :func:`open_lazy_stack` — open ``.h5ad`` files (one per section) as a :class:`LazyStack`,
  with the same gene-panel policy, normalization and unit factor as
  :func:`napari_inrst.stack.build_stack`.
* :meth:`LazyStack.iter_chunks` — normalized expression of one section, chunk by chunk.
* :meth:`LazyStack.subsample` — an ordinary in-memory :class:`~napari_inrst.stack.SectionStack`
  of a random subset of cells per section (for alignment and gene selection).

No Qt and no torch here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import InputError
from ..io.readers import NO_Z_MESSAGE, section_z
from .normalize import TARGET_SUM, as_dense
from .sections import GENE_POLICIES, NORMALIZE_CHOICES, PlacedSection, StackBase

#: rows read per chunk by default (× genes × 4 bytes: 16,384 × 2,000 genes ≈ 131 MB dense)
CHUNK_ROWS = 16384


@dataclass
class LazySection(PlacedSection):
    """One section on disk: coordinates in memory, expression read on demand."""

    name: str
    source: str
    z: float  # µm
    xy_input: np.ndarray  # n × 2, µm (unit factor applied), as read
    adata: object  # anndata.AnnData opened with backed='r'
    var_names: list[str]
    transform: np.ndarray = field(default_factory=lambda: np.eye(3))
    excluded: bool = False

    @property
    def n_obs(self) -> int:
        return int(self.xy_input.shape[0])



@dataclass
class LazyStack(StackBase):
    """Sections on disk (:class:`LazySection`) sharing one gene panel and one normalization (see
    :func:`open_lazy_stack`)."""

    lazy: bool = True

    @property
    def n_obs(self) -> int:
        return sum(s.n_obs for s in self.sections)

    def restrict_genes(self, genes: Sequence[str]):
        """Model only ``genes`` (a subset of the panel, kept in panel order)."""
        keep = set(map(str, genes))
        missing = keep - set(self.genes)
        if missing:
            raise InputError(None, f"{len(missing)} genes are not in the stack (first: {sorted(missing)[0]})")
        self.genes = [g for g in self.genes if g in keep]
        self.report["n_genes_kept"] = len(self.genes)
        return self

    def _columns(self, s: LazySection) -> tuple[np.ndarray, np.ndarray]:
        """(source columns in the file, their positions in the panel) for section ``s``."""
        pos = {g: k for k, g in enumerate(self.genes)}
        src = np.array([j for j, g in enumerate(s.var_names) if g in pos], dtype=np.int64)
        dst = np.array([pos[s.var_names[j]] for j in src], dtype=np.int64)
        return src, dst

    def iter_chunks(self, i: int, chunk_rows: int = CHUNK_ROWS, rows: np.ndarray | None = None, *,
                    sparse: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first_row, values)``: normalized expression (float32, rows × panel genes) of
        section ``i``, read ``chunk_rows`` rows at a time (or only the sorted ``rows`` given, in
        windows of ``chunk_rows``).

        Each chunk is validated as it is read (finite; non-negative counts for ``log1p``) and
        raises :class:`InputError` naming the file. ``log1p`` uses each cell's library size over
        every gene measured in the file, as :func:`~napari_inrst.stack.build_stack` does. With
        ``sparse=True`` a sparse file gives CSR chunks (only the stored values are normalized).
        """
        s = self.sections[i]
        src, dst = self._columns(s)
        X = s.adata.X
        n = s.n_obs
        for r0 in range(0, n, chunk_rows):
            if rows is not None:
                sel = rows[(rows >= r0) & (rows < r0 + chunk_rows)]
                if len(sel) == 0:
                    continue
                block = X[sel]
            else:
                block = X[r0:min(r0 + chunk_rows, n)]
            yield r0, self._normalize_block(s, block, src, dst, sparse)

    def _normalize_block(self, s: LazySection, block, src, dst, sparse_out: bool = False):
        from scipy import sparse

        is_sparse = sparse.issparse(block)
        if is_sparse:
            block = block.tocsr().astype(np.float32)
            vals = block.data
        else:
            block = np.asarray(block, dtype=np.float32)
            vals = block
        if vals.size and not np.isfinite(vals).all():
            raise InputError(s.source, "expression has NaN or infinite values")
        if self.normalize == "log1p" and vals.size and vals.min() < 0:
            raise InputError(s.source, f"expression has negative values (min {vals.min():g}) but counts are "
                                       "expected for normalize='log1p'; pass normalize='none' for "
                                       "already-normalized values")
        if self.normalize == "log1p":  # library size over every gene in the file, then log1p
            tot = np.asarray(block.sum(axis=1), dtype=np.float64).ravel()
            scale = np.divide(TARGET_SUM, tot, out=np.zeros_like(tot), where=tot > 0).astype(np.float32)
            if is_sparse:  # log1p(0) = 0: only the stored values change
                block.data *= np.repeat(scale, np.diff(block.indptr))
                np.log1p(block.data, out=block.data)
            else:
                block = np.log1p(block * scale[:, None])
        identity = len(src) == block.shape[1] and np.array_equal(src, dst) and len(dst) == len(self.genes)
        if is_sparse and sparse_out:
            if identity:
                return block
            perm = sparse.csr_matrix((np.ones(len(src), np.float32), (src, dst)), shape=(block.shape[1], len(self.genes)))
            return (block @ perm).tocsr()
        if identity:
            return as_dense(block)
        out = np.zeros((block.shape[0], len(self.genes)), dtype=np.float32)
        out[:, dst] = as_dense(block[:, src])
        return out

    def subsample(self, n_per_section: int = 3000, seed: int = 0):
        """An in-memory :class:`~napari_inrst.stack.SectionStack` of at most ``n_per_section``
        random cells of each section (normalized as this stack; transforms copied)."""
        import anndata as ad
        import pandas as pd

        from . import Section, SectionStack

        rng = np.random.default_rng(seed)
        secs = []
        for i, s in enumerate(self.sections):
            k = min(n_per_section, s.n_obs)
            rows = np.sort(rng.choice(s.n_obs, k, replace=False))
            X = np.concatenate([c for _, c in self.iter_chunks(i, rows=rows)], axis=0)
            a = ad.AnnData(X=X, obs=pd.DataFrame(index=[f"{s.name}:{r}" for r in rows]),
                           var=pd.DataFrame(index=pd.Index(self.genes, dtype=str)))
            a.obsm["spatial"] = s.xy_input[rows]
            secs.append(Section(s.name, a, s.z, s.transform.copy(), s.source, s.excluded))
            secs[-1].deformation = s.deformation
        return SectionStack(secs, list(self.genes), self.normalize, self.gene_policy, self.unit_factor,
                            dict(self.report))

    def close(self):
        for s in self.sections:
            f = getattr(s.adata, "file", None)
            if f is not None:
                try:
                    f.close()
                except Exception:  # noqa: BLE001 - already closed
                    pass


def open_lazy_stack(paths: Sequence, z: Sequence[float] | None, *, names: Sequence[str] | None = None,
                    normalize: str = "log1p", gene_policy: str = "intersection", unit_factor: float = 1.0,
                    min_sections: int = 1) -> LazyStack:
    """Open ``.h5ad`` sections in backed mode (expression stays on disk) as a :class:`LazyStack`.

    Checks what can be checked without reading the expression (file readable, non-empty, 2D
    finite ``obsm['spatial']``, unique cell names, one z per section, distinct z, shared genes);
    the expression is checked chunk by chunk as it is streamed. ``z`` None: each file's own z
    (``uns['z_um']``, ``uns['z']`` or a constant ``obs['z']``), as the eager readers take it.
    """
    import anndata as ad

    paths = [Path(p) for p in paths]
    n = len(paths)
    if normalize not in NORMALIZE_CHOICES:
        raise InputError(None, f"normalize must be one of {NORMALIZE_CHOICES}, got '{normalize}'")
    if gene_policy not in GENE_POLICIES:
        raise InputError(None, f"gene_policy must be one of {GENE_POLICIES}, got '{gene_policy}'")
    if n < min_sections:
        raise InputError(", ".join(map(str, paths)) or None, f"a stack needs at least {min_sections} sections; got {n}")
    if z is not None and len(z) != n:
        raise InputError(None, f"{n} sections but {len(z)} z positions; give one z per section")
    names = list(names) if names is not None else [p.stem for p in paths]
    sections = []
    try:
        for i, (p, nm) in enumerate(zip(paths, names)):
            if not p.exists():
                raise InputError(p, "no such file")
            try:
                a = ad.read_h5ad(p, backed="r")
            except Exception as exc:  # noqa: BLE001 - h5py/anndata raise many types
                raise InputError(p, f"not a readable .h5ad file ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})") from None
            zz = z[i] if z is not None else section_z(a)
            if zz is None:
                a.file.close()
                raise InputError(p, NO_Z_MESSAGE)
            zz = float(zz) * float(unit_factor)
            if not np.isfinite(zz):
                a.file.close()
                raise InputError(p, "z positions must be finite numbers")
            sections.append(LazySection(str(nm), str(p), zz, np.zeros((0, 2)), a, list(map(str, a.var_names))))
            _check_lazy_section(sections[-1], p, float(unit_factor))
            for prev in sections[:-1]:
                if prev.z == zz:
                    raise InputError(p, f"has the same z ({zz:g} µm) as {prev.source}; two sections cannot share a z")
        gene_sets = [s.var_names for s in sections]
        if gene_policy == "intersection":
            common = set(gene_sets[0]).intersection(*map(set, gene_sets[1:]))
            genes = [g for g in gene_sets[0] if g in common]
            if not genes:
                raise InputError(", ".join(map(str, paths)), "no genes are shared between the sections "
                                                              "(gene_policy='intersection'); try gene_policy='union'")
        else:
            genes = list(dict.fromkeys(g for gs in gene_sets for g in gs))
        from ..io.validate import validate_shared_genes

        validate_shared_genes(genes, paths, gene_policy)
    except BaseException:  # nothing left open: every section's file is closed
        for s in sections:
            try:
                s.adata.file.close()
            except Exception:  # noqa: BLE001
                pass
        raise
    report = {"gene_policy": gene_policy, "genes_per_section": {s.name: len(s.var_names) for s in sections},
              "n_genes_kept": len(genes), "lazy": True}
    return LazyStack(sections, genes, normalize, gene_policy, float(unit_factor), report)


def _check_lazy_section(s: LazySection, path, unit_factor: float):
    from ..io.validate import validate_layout, validate_stack_section

    validate_layout(s.adata, path)
    s.xy_input = np.asarray(s.adata.obsm["spatial"], dtype=np.float64) * unit_factor
    validate_stack_section(s.xy_input, path)
