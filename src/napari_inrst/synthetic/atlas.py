"""Synthetic atlases at any size: the sample's analytic tissue, cut into sections of single cells.

:func:`write_atlas` writes ``n_cells`` cells × ``n_genes`` genes as one ``.h5ad`` per section
(raw counts in a sparse CSR matrix, ``obsm['spatial']`` in µm, ``uns['z_um']``), generating each
section in blocks of cells so memory stays bounded by one section's sparse counts. Cells are
placed uniformly at random inside the tissue outline (a Poisson process, as segmented cells
are, not a spot grid); the tissue is scaled so the mean cell spacing is ``cell_spacing_um``.
The truth is :class:`~napari_inrst.synthetic.sample.SyntheticTissue` (``atlas_tissue`` rebuilds it), so
benchmarks at 10^6 cells can score against it. Used by ``benchmarks/bench_scale.py`` and
``scripts/make_atlas.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .sample import SyntheticTissue

#: fraction of the tissue's bounding box inside its outline (measured; used to size the tissue)
_FILL = 0.68


def atlas_tissue(n_cells: int, n_genes: int, n_sections: int, *, cell_spacing_um: float = 10.0,
                 spacing_z: float = 20.0, seed: int = 0) -> SyntheticTissue:
    """The tissue of :func:`write_atlas` with these arguments (the analytic truth)."""
    per = n_cells / max(n_sections, 1)
    area = per * cell_spacing_um ** 2 / _FILL  # bounding box area holding `per` cells at that spacing
    height = math.sqrt(area * 0.75)
    return SyntheticTissue(n_genes=n_genes, width=height / 0.75, height=height,
                           depth=spacing_z * max(n_sections - 1, 1), seed=seed)


def _cells(tissue: SyntheticTissue, z: float, n: int, rng) -> np.ndarray:
    """``n`` uniform random positions inside the tissue at height ``z`` (rejection sampling)."""
    out, have = [], 0
    while have < n:
        m = int((n - have) / _FILL * 1.2) + 64
        xy = rng.uniform((0, 0), (tissue.width, tissue.height), (m, 2))
        xy = xy[tissue.inside(np.column_stack([xy, np.full(m, z)]))]
        out.append(xy)
        have += len(xy)
    return np.concatenate(out)[:n]


def atlas_counts(tissue: SyntheticTissue, xyz: np.ndarray, rng, library_size: float = 800.0,
                 block: int = 8192):
    """Sparse CSR float32 Poisson counts of the cells at ``xyz`` (lognormal library sizes)."""
    from scipy import sparse

    parts = []
    for s in range(0, len(xyz), block):
        p = tissue.rates(xyz[s:s + block])
        lib = rng.lognormal(math.log(library_size), 0.35, len(p))
        c = rng.poisson(p * lib[:, None]).astype(np.float32)
        parts.append(sparse.csr_matrix(c))
    return sparse.vstack(parts, format="csr")


def write_atlas(directory, n_cells: int = 1_000_000, n_genes: int = 2000, n_sections: int = 20, *,
                cell_spacing_um: float = 10.0, spacing_z: float = 20.0, library_size: float = 800.0,
                seed: int = 0, progress=None) -> list[Path]:
    """Write the atlas as ``section_XXX.h5ad`` files in ``directory`` (atomic per file); returns their paths."""
    import anndata as ad
    import pandas as pd

    from ..io.atomic import atomic_path

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tissue = atlas_tissue(n_cells, n_genes, n_sections, cell_spacing_um=cell_spacing_um,
                          spacing_z=spacing_z, seed=seed)
    sizes = np.full(n_sections, n_cells // n_sections)
    sizes[: n_cells - sizes.sum()] += 1
    paths = []
    var = pd.DataFrame(index=pd.Index(tissue.genes, dtype=str))
    for i, n in enumerate(sizes):
        rng = np.random.default_rng([seed, i])
        z = i * spacing_z
        xy = _cells(tissue, z, int(n), rng)
        X = atlas_counts(tissue, np.column_stack([xy, np.full(len(xy), z)]), rng, library_size)
        a = ad.AnnData(X=X, obs=pd.DataFrame(index=pd.Index([f"s{i:03d}_{k:07d}" for k in range(len(xy))], dtype=str)),
                       var=var)
        a.obsm["spatial"] = xy
        a.uns["z_um"] = float(z)
        path = directory / f"section_{i:03d}.h5ad"
        with atomic_path(path) as tmp:
            a.write_h5ad(tmp)
        paths.append(path)
        del a, X
        if progress is not None:
            progress({"section": i + 1, "total": n_sections, "path": str(path)})
    return paths
