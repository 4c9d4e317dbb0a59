"""A synthetic tissue with analytic, continuous ground truth, cut into serial sections.

Nothing is downloaded: the tissue is a handful of closed-form spatial programs (curved layers,
gradients, 3D blobs, a sharp boundary) inside a curved, asymmetric outline that changes with z.
Each gene's rate is ``base_g · exp(P(x, y, z) · w_g)``; the expected normalized expression
(:meth:`SyntheticTissue.truth`) is ``log1p(10,000 · rate / Σ rate)``. Sections sample it on a
jittered hexagonal spot grid, draw Poisson counts around a random library size, and are moved
by random rigid motions (one mirrored) whose exact inverse is stored with each section, so
tests of alignment and of the field can compare with the truth everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..align.kabsch import rigid_matrix  # noqa: F401 - re-exported (tests and scripts use it from here)
from ..stack import TARGET_SUM


@dataclass
class SyntheticTissue:
    """Analytic tissue in a box of ``width × height`` µm over ``depth`` µm of z."""

    n_genes: int = 300
    width: float = 2000.0
    height: float = 1500.0
    depth: float = 270.0
    seed: int = 0
    n_blobs: int = 6
    genes: list[str] = field(init=False)

    def __post_init__(self):
        rng = np.random.default_rng(self.seed)
        self.center = np.array([self.width / 2, self.height / 2])
        self.radius = 0.42 * min(self.width, self.height)
        # blobs: 3D Gaussian hot spots (centres inside the tissue, radii 80–250 µm)
        ang = rng.uniform(0, 2 * np.pi, self.n_blobs)
        rad = rng.uniform(0.1, 0.7, self.n_blobs) * self.radius
        self.blob_xyz = np.column_stack([
            self.center[0] + 1.3 * rad * np.cos(ang),
            self.center[1] + rad * np.sin(ang),
            rng.uniform(0, self.depth, self.n_blobs),
        ])
        self.blob_r = rng.uniform(80, 250, self.n_blobs)
        self.layer_edges = np.array([-0.55, -0.2, 0.15, 0.5])  # 5 curved layers
        k = self.n_programs
        # gene loadings: each gene uses 1–3 programs strongly, others weakly
        W = rng.normal(0, 0.3, (k, self.n_genes))
        for g in range(self.n_genes):
            strong = rng.choice(k, size=rng.integers(1, 4), replace=False)
            W[strong, g] = rng.choice([-1, 1], size=len(strong)) * rng.uniform(1.0, 2.5, len(strong))
        self.W = W
        self.log_base = rng.normal(0, 1.0, self.n_genes) - 1.0
        self.genes = [f"G{g:03d}" for g in range(self.n_genes)]
        for i, name in enumerate(["LayerA", "LayerB", "LayerC", "LayerD", "LayerE"]):
            self.genes[i] = name  # a few named genes that follow one layer strongly
            self.W[:, i] = 0.0
            self.W[i, i] = 3.0
        self.genes[5], self.genes[6] = "Boundary", "BlobA"
        self.W[:, 5] = 0.0
        self.W[self._boundary_index, 5] = 3.0
        self.W[:, 6] = 0.0
        self.W[self._blob0_index, 6] = 3.5

    # --- programs -------------------------------------------------------------------------
    @property
    def n_programs(self) -> int:
        return 5 + 3 + self.n_blobs + 1  # layers, gradients x/y/z, blobs, sharp boundary

    @property
    def _blob0_index(self) -> int:
        return 8

    @property
    def _boundary_index(self) -> int:
        return 8 + self.n_blobs

    def _norm(self, xyz):
        xyz = np.asarray(xyz, dtype=np.float64)
        u = (xyz[:, 0] - self.center[0]) / self.radius
        v = (xyz[:, 1] - self.center[1]) / self.radius
        w = xyz[:, 2] / self.depth
        return u, v, w

    def outline_radius(self, theta, w):
        """Tissue radius (in units of ``self.radius``) at polar angle ``theta`` and relative depth ``w``."""
        shape = 1 + 0.18 * np.cos(2 * theta) + 0.12 * np.sin(2 * theta) + 0.1 * np.cos(theta) + 0.05 * np.cos(3 * theta)
        return shape * (1.05 - 0.25 * (w - 0.5) ** 2) * np.array([1.25, 1.0]).mean()

    def inside(self, xyz) -> np.ndarray:
        """True where (x, y, z) lies in tissue (a curved, asymmetric outline that varies with z)."""
        u, v, w = self._norm(xyz)
        r = np.hypot(u / 1.3, v)
        theta = np.arctan2(v, u / 1.3)
        return (r <= self.outline_radius(theta, w)) & (w >= -0.05) & (w <= 1.05)

    def programs(self, xyz) -> np.ndarray:
        """n × n_programs matrix of the spatial programs at the points."""
        u, v, w = self._norm(xyz)
        xyz = np.asarray(xyz, dtype=np.float64)
        # curved layers: depth coordinate bent by x and tilted with z
        s = v - 0.35 * u ** 2 + 0.15 * np.sin(2.0 * u + 3.0 * w) + 0.2 * (w - 0.5)
        e = self.layer_edges
        width = 0.06
        steps = [1 / (1 + np.exp(-(s - ed) / width)) for ed in e]
        layers = [1 - steps[0]] + [steps[i] - steps[i + 1] for i in range(len(e) - 1)] + [steps[-1]]
        grads = [u, v, 2 * (w - 0.5)]
        d2 = ((xyz[:, None, :] - self.blob_xyz[None]) ** 2).sum(-1)
        blobs = np.exp(-0.5 * d2 / self.blob_r[None] ** 2)
        # sharp boundary: a tilted plane, 5 µm wide
        dist = (xyz[:, 0] - self.center[0]) * 0.8 + (xyz[:, 1] - self.center[1]) * 0.6 - 60.0 * (w - 0.5)
        sharp = 1 / (1 + np.exp(-np.clip(dist / 5.0, -50, 50)))
        return np.column_stack([*layers, *grads, blobs, sharp])

    def rates(self, xyz) -> np.ndarray:
        """Expected relative abundance of each gene (rows sum to 1)."""
        logit = self.programs(xyz) @ self.W + self.log_base
        logit -= logit.max(axis=1, keepdims=True)
        r = np.exp(logit)
        return r / r.sum(axis=1, keepdims=True)

    def truth(self, xyz, genes=None) -> np.ndarray:
        """Ground-truth normalized expression ``log1p(10,000 · p_g)`` at the points (float32)."""
        p = self.rates(xyz)
        if genes is not None:
            idx = [self.genes.index(g) for g in genes]
            p = p[:, idx]
        return np.log1p(TARGET_SUM * p).astype(np.float32)

    # --- sampling -------------------------------------------------------------------------
    def spots(self, z: float, spacing: float, rng, jitter: float = 0.25) -> np.ndarray:
        """Jittered hexagonal spot grid inside the tissue at height ``z``: n × 2 (x, y) µm."""
        xs = np.arange(0, self.width, spacing)
        ys = np.arange(0, self.height, spacing * np.sqrt(3) / 2)
        gx, gy = np.meshgrid(xs, ys)
        gx = gx + (np.arange(len(ys))[:, None] % 2) * spacing / 2
        xy = np.column_stack([gx.ravel(), gy.ravel()])
        xy = xy + rng.uniform(-jitter, jitter, xy.shape) * spacing
        keep = self.inside(np.column_stack([xy, np.full(len(xy), z)]))
        return xy[keep]


def make_sample(
    n_sections: int = 10,
    spacing_z: float = 30.0,
    missing=(3, 7),
    n_genes: int = 300,
    spot_spacing: float = 50.0,
    library_size: float = 3000.0,
    max_angle: float = 30.0,
    max_shift_frac: float = 0.25,
    mirror: int | None = -1,
    misplace: bool = True,
    seed: int = 0,
):
    """Cut the synthetic tissue into sections. Returns ``(sections, tissue)``.

    ``sections`` is a list of AnnData (raw counts, ``obsm['spatial']`` as misplaced on the
    slide, ``uns['z_um']``, ``uns['truth_matrix']`` mapping the slide coordinates back to the
    true frame, ``uns['mirrored']``) for the measured positions; ``missing`` lists positions
    (0-based, of ``n_sections``) not measured. The middle measured section is the reference and
    is left in place; ``mirror`` picks which other measured section is flipped (None: none).
    """
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(seed)
    tissue = SyntheticTissue(n_genes=n_genes, depth=spacing_z * (n_sections - 1), seed=seed)
    measured = [i for i in range(n_sections) if i not in set(missing)]
    ref = measured[len(measured) // 2]
    movers = [i for i in measured if i != ref]
    mirror_at = None if (mirror is None or not misplace) else movers[mirror]
    out = []
    for i in measured:
        z = i * spacing_z
        xy_true = tissue.spots(z, spot_spacing, rng)
        xyz = np.column_stack([xy_true, np.full(len(xy_true), z)])
        p = tissue.rates(xyz)
        lib = rng.lognormal(np.log(library_size), 0.35, len(xy_true))
        counts = rng.poisson(p * lib[:, None]).astype(np.float32)
        if misplace and i != ref:
            M = rigid_matrix(rng.uniform(-max_angle, max_angle),
                             rng.uniform(-max_shift_frac, max_shift_frac, 2) * tissue.width,
                             mirror=(i == mirror_at), center=tissue.center)
        else:
            M = np.eye(3)
        # slide coordinates: the inverse motion applied to the true positions
        Minv = np.linalg.inv(M)
        xy_slide = xy_true @ Minv[:2, :2].T + Minv[:2, 2]
        names = [f"s{i:02d}_{k:05d}" for k in range(len(xy_true))]
        a = ad.AnnData(X=counts, obs=pd.DataFrame(index=names), var=pd.DataFrame(index=tissue.genes))
        a.obsm["spatial"] = xy_slide
        a.uns["z_um"] = float(z)
        a.uns["truth_matrix"] = M  # slide coordinates → true (stack) frame
        a.uns["mirrored"] = bool(i == mirror_at)
        a.uns["spot_diameter_um"] = float(spot_spacing * 0.55)
        out.append(a)
    return out, tissue


SAMPLE_FILES = "section_*.h5ad"


def write_sample(directory, **kwargs) -> list[Path]:
    """Write the sample sections as ``section_XX.h5ad`` into ``directory`` (atomic per file)."""
    from ..io.atomic import atomic_path

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sections, _ = make_sample(**kwargs)
    paths = []
    for a in sections:
        idx = int(round(a.uns["z_um"] / kwargs.get("spacing_z", 30.0)))
        path = directory / f"section_{idx:02d}.h5ad"
        with atomic_path(path) as tmp:
            a.write_h5ad(tmp, compression="gzip")
        paths.append(path)
    return paths


def sample_stack(normalize: str = "log1p", **kwargs):
    """The sample as a :class:`~napari_inrst.stack.SectionStack` (misplaced, not aligned) plus the tissue."""
    from ..stack import build_stack

    sections, tissue = make_sample(**kwargs)
    names = [f"section_{int(round(a.uns['z_um'] / kwargs.get('spacing_z', 30.0))):02d}" for a in sections]
    stack = build_stack(sections, [a.uns["z_um"] for a in sections], names=names, normalize=normalize)
    for s, a in zip(stack.sections, sections):
        s.adata.uns["truth_matrix"] = np.asarray(a.uns["truth_matrix"])
        s.adata.uns["mirrored"] = bool(a.uns["mirrored"])
    return stack, tissue
