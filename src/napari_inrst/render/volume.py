"""Evaluate a field on a voxel grid, slab of z planes by slab (memory stays bounded), masked by
occupancy. ``render_volume`` returns the array; ``iter_slabs`` streams slabs to a writer.

The latent of the voxels inside tissue is kept in a :class:`LatentCache` when it fits its budget,
so switching gene on the same volume is a decode only (no trunk run).
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np

from .cache import LatentCache, LatentEntry
from .grids import VolumeGrid, volume_grid
from .plane import BAND_THRESHOLD, CHUNK, decode_entry, gene_indices, iter_latent

#: grid points per slab
SLAB_POINTS = 1 << 18


def _slab_planes(grid: VolumeGrid, slab_points: int) -> int:
    return max(1, int(slab_points) // max(grid.ny * grid.nx, 1))


def iter_slabs(field, grid: VolumeGrid, genes: Sequence[int], *, masked: bool = True, threshold: float = 0.5,
               slab_points: int = SLAB_POINTS, chunk: int = CHUNK) -> Iterator[tuple]:
    """Yields ``(k0, k1, values, entry)`` per slab of z planes ``k0:k1``: ``values`` is
    (len(genes), k1-k0, ny, nx) float32 (NaN outside tissue), ``entry`` the slab's latent."""
    step = _slab_planes(grid, slab_points)
    for k0 in range(0, grid.nz, step):
        k1 = min(grid.nz, k0 + step)
        xyz = grid.points(slice(k0, k1))
        gen = iter_latent(field, xyz, masked=masked, threshold=threshold, chunk=chunk)
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                entry = stop.value
                break
        vals = decode_entry(field, entry, genes, (k1 - k0, grid.ny, grid.nx))
        yield k0, k1, vals, entry


def band_grid(field, grid: VolumeGrid, oversample: float | None):
    """The coarser grid band-limited evaluation samples (and per-axis cubic weights z, y, x; None
    where an axis is sampled as requested), or None when nothing is gained."""
    from .resample import coarse_axis, cubic_weights, field_detail_um

    detail = field_detail_um(field) if oversample else None
    if not detail:
        return None
    steps = (detail[1] / oversample, detail[0] / oversample, detail[0] / oversample)
    axes, weights = [], []
    for o, d, n, s in zip(grid.translate, grid.scale, grid.shape, steps):
        if math.isfinite(s) and s > d * 1.0001:
            c0, cn = coarse_axis(o, o + (n - 1) * d, s)
            if cn < n:
                axes.append((c0, s, cn))
                weights.append(cubic_weights(c0, s, cn, o, d, n))
                continue
        if not math.isfinite(s) and n > 1:  # constant along this axis (no frequencies): 1 sample
            mid = o + (n - 1) * d / 2
            axes.append((mid, d, 1))
            weights.append(np.ones((n, 1), dtype=np.float32))
            continue
        axes.append((o, d, n))
        weights.append(None)
    if all(w is None for w in weights):
        return None
    (z0, dz, nz), (y0, dy, ny), (x0, dx, nx) = axes
    return VolumeGrid(z0, y0, x0, dz, dy, dx, nz, ny, nx), weights


def iter_volume(field, grid: VolumeGrid, genes: Sequence[int], *, cache: LatentCache | None = None,
                masked: bool = True, threshold: float = 0.5, slab_points: int = SLAB_POINTS,
                oversample: float | None = None):
    """Generator: yields progress fractions, returns (len(genes), nz, ny, nx) float32.

    Reuses the cached latent of this grid when present (a gene switch costs only the decode);
    otherwise fills the cache if the latent fits its budget. ``oversample``: band-limited
    evaluation on a coarser grid + cubic resampling (see :mod:`.resample`); None: exact.
    """
    band = band_grid(field, grid, oversample)
    if band is not None:
        from .resample import fill_nearest, resample3d

        coarse, (Wz, Wy, Wx) = band
        key = (coarse.key(), bool(masked), "band")
        entry = cache.get(field, key) if cache is not None else None
        if entry is None:
            entry = yield from iter_latent(field, coarse.points(), masked=masked, threshold=BAND_THRESHOLD)
            if cache is not None:
                cache.put(field, key, entry)
        vals = fill_nearest(decode_entry(field, entry, genes, coarse.shape), entry.mask.reshape(coarse.shape))
        out = resample3d(vals, Wz, Wy, Wx)
        if masked and entry.occ is not None:
            occ = resample3d(entry.occ.reshape(1, *coarse.shape), Wz, Wy, Wx)[0]
            out[:, occ < threshold] = np.nan
        yield 1.0
        return out
    key = (grid.key(), bool(masked), float(threshold))
    entry = cache.get(field, key) if cache is not None else None
    if entry is not None:
        yield 1.0
        return decode_entry(field, entry, genes, grid.shape)
    out = np.empty((len(genes), *grid.shape), dtype=np.float32)
    keep = cache is not None
    masks, lats, nbytes = [], [], 0
    for k0, k1, vals, e in iter_slabs(field, grid, genes, masked=masked, threshold=threshold,
                                      slab_points=slab_points):
        out[:, k0:k1] = vals
        if keep:
            nbytes += e.nbytes
            if cache.fits(nbytes):
                masks.append(e.mask)
                lats.append(e.latent)
            else:  # too big to cache: stop holding it
                keep, masks, lats = False, [], []
        yield k1 / grid.nz
    if keep and masks:
        cache.put(field, key, LatentEntry(np.concatenate(masks), np.concatenate(lats)))
    return out


def evaluate_volume(field, grid: VolumeGrid, genes: Sequence[int], **kw) -> np.ndarray:
    gen = iter_volume(field, grid, genes, **kw)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def render_volume(field, gene, *, shape=None, resolution: int | None = None, bounds=None,
                  masked: bool = True, threshold: float = 0.5, budget_bytes: float = 1 << 30,
                  cache: LatentCache | None = None, oversample: float | None = None) -> tuple[np.ndarray, VolumeGrid]:
    """The field on a voxel grid over ``bounds`` (default: the field's bounds).

    ``shape = (nz, ny, nx)`` or ``resolution`` voxels on the longest axis (cubic voxels; default
    128). ``gene``: a name/index → (nz, ny, nx); a list → (k, nz, ny, nx). Returns
    ``(array, grid)``; ``grid.scale`` / ``grid.translate`` place it in napari (z, y, x) µm.
    """
    idx = gene_indices(field, gene)
    bounds = field.bounds() if bounds is None else bounds
    grid = volume_grid(bounds, resolution, shape=shape, budget_bytes=budget_bytes,
                       bytes_per_voxel=4.0 * (len(idx) + 1))
    out = evaluate_volume(field, grid, idx, cache=cache, masked=masked, threshold=threshold, oversample=oversample)
    return (out[0] if isinstance(gene, (str, int, np.integer)) else out), grid
