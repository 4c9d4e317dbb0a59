"""Evaluate a field on a voxel grid, slab of z planes by slab, masked by occupancy.

* ``render_volume`` / ``iter_volume`` return the whole array (the viewer: ≤ 512 per axis). The
  latent of the voxels inside tissue is kept in a :class:`LatentCache` when it fits its budget,
  so switching gene on the same volume is a decode only (no trunk run).
* ``stream_volume`` yields the volume slab by slab for volumes larger than memory: each slab is
  evaluated chunk by chunk and decoded at once, so only the slab's output values and one chunk of
  points/latent are ever held (nothing of the whole volume).
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np

from ..io.ome import SLAB_BYTES, VolumeWriter
from ..generators import run_to_end
from ..io.atomic import write_error
from .cache import LatentCache, LatentEntry
from .grids import VolumeGrid, volume_grid
from .plane import BAND_THRESHOLD, CHUNK, _eval_chunk, decode_entry, gene_indices, iter_latent
from .threads import render_threads

#: grid points per slab
SLAB_POINTS = 1 << 18
#: streamed band-limited volumes keep their coarse samples when they take at most this (or the slab budget)
BAND_MAX_BYTES = 64 * 2**20


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
        entry = run_to_end(iter_latent(field, xyz, masked=masked, threshold=threshold, chunk=chunk))
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
    return run_to_end(iter_volume(field, grid, genes, **kw))


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


# --- out of core ---------------------------------------------------------------------------
def slab_planes(grid: VolumeGrid, n_genes: int, slab_bytes: float, multiple: int = 1) -> int:
    """z planes per slab so that one slab of output values (``n_genes`` float32 per voxel) fits
    ``slab_bytes``; rounded down to a multiple of ``multiple`` (e.g. the file's chunk depth) when
    that still fits. At least one plane."""
    per_plane = 4.0 * max(int(n_genes), 1) * grid.ny * grid.nx
    n = max(1, int(float(slab_bytes) // per_plane))
    if multiple > 1 and n >= multiple:
        n -= n % multiple
    return min(n, grid.nz)


def _band_coarse_bytes(field, coarse: VolumeGrid, n_genes: int) -> float:
    rank = int(getattr(field, "rank", 64) or 64)
    return coarse.n * (4.0 * rank + 4.0 * n_genes + 4.0 + 1.0 + 4.0 * n_genes)


def stream_volume(field, grid: VolumeGrid, genes: Sequence[int], *, masked: bool = True, threshold: float = 0.5,
                  slab_bytes: float = 256 * 2**20, planes_multiple: int = 1, chunk: int = CHUNK,
                  oversample: float | None = None, info: dict | None = None):
    """Yields ``(k0, k1, values)`` for consecutive slabs of z planes ``k0:k1`` covering the grid;
    ``values`` is (len(genes), k1-k0, ny, nx) float32, NaN outside tissue.

    Memory: one slab of output (≤ ``slab_bytes``, at least one plane) plus one ``chunk`` of points
    and latent — never the whole volume. ``oversample`` (band-limited, see :mod:`.resample`): the
    coarse samples (their number is set by the field's finest scale, not by the volume's size) are
    evaluated once and kept, and each slab is resampled from them plane by plane; used only when
    they take at most ``max(slab_bytes, BAND_MAX_BYTES)`` (else every voxel is evaluated exactly).
    ``info`` (a dict), if given, receives ``mode`` ('exact' or 'band-limited') and ``slab_planes``.
    """
    genes = list(genes)
    step = slab_planes(grid, len(genes), slab_bytes, planes_multiple)
    band = band_grid(field, grid, oversample) if oversample else None
    if band is not None and _band_coarse_bytes(field, band[0], len(genes)) > max(float(slab_bytes), BAND_MAX_BYTES):
        band = None  # the coarse samples alone would exceed the budget: evaluate exactly
    if info is not None:
        info.update(mode="band-limited" if band is not None else "exact", slab_planes=step)
    if band is not None:
        yield from _stream_band(field, grid, genes, band, step, masked=masked, threshold=threshold)
        return
    plane = grid.ny * grid.nx
    for k0 in range(0, grid.nz, step):
        k1 = min(grid.nz, k0 + step)
        n = (k1 - k0) * plane
        out = np.full((len(genes), n), np.nan, dtype=np.float32)
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            part = grid.flat_points(k0 * plane + s, k0 * plane + e)
            with render_threads():
                m, lat = _eval_chunk(field, part, masked, threshold, [])
                if lat is not None:
                    vals = np.asarray(field.decode(lat, genes), dtype=np.float32)  # (m, k)
            if lat is not None:
                if m.all():
                    out[:, s:e] = vals.T
                else:
                    out[:, s + np.flatnonzero(m)] = vals.T
        yield k0, k1, out.reshape(len(genes), k1 - k0, grid.ny, grid.nx)
        del out  # not alive while the next slab is computed


def _stream_band(field, grid: VolumeGrid, genes, band, step: int, *, masked: bool, threshold: float):
    from .plane import latent_entry
    from .resample import fill_nearest, resample3d

    coarse, (Wz, Wy, Wx) = band
    entry = latent_entry(field, coarse.points(), masked=masked, threshold=BAND_THRESHOLD)
    vals = fill_nearest(decode_entry(field, entry, genes, coarse.shape), entry.mask.reshape(coarse.shape))
    occ = entry.occ.reshape(1, *coarse.shape) if (masked and entry.occ is not None) else None
    del entry
    for k0 in range(0, grid.nz, step):
        k1 = min(grid.nz, k0 + step)
        wz = Wz[k0:k1] if Wz is not None else None
        # z on the small coarse samples first; then y and x plane by plane, so temporaries are
        # one plane, never a slab
        vz = resample3d(vals, wz, None, None) if wz is not None else vals[:, k0:k1]
        oz = None
        if occ is not None:
            oz = resample3d(occ, wz, None, None) if wz is not None else occ[:, k0:k1]
        out = np.empty((len(genes), k1 - k0, grid.ny, grid.nx), dtype=np.float32)
        for j in range(k1 - k0):
            out[:, j] = resample3d(vz[:, j:j + 1], None, Wy, Wx)[:, 0]
            if oz is not None:
                out[:, j][:, resample3d(oz[:, j:j + 1], None, Wy, Wx)[0, 0] < threshold] = np.nan
        del vz, oz
        yield k0, k1, out
        del out


def write_field_volume(path, field, grid, genes, *, names=None, masked: bool = True, threshold: float = 0.5,
                       oversample: float | None = None, slab_bytes: float = SLAB_BYTES, contrast=None,
                       pyramid: bool = True, progress=None) -> dict:
    """Evaluate ``field`` on ``grid`` for gene indices ``genes`` and stream it to ``path``
    (OME-Zarr with pyramid, or TIFF) slab by slab: memory is bounded by ``slab_bytes`` whatever the
    volume's size (see :func:`~napari_inrst.render.volume.stream_volume`). ``progress(k1, nz)`` is
    called after each slab. Returns ``{'mode', 'slab_planes'}``. Nothing is left at ``path`` on
    error; OS errors (disk full, unwritable folder) become an InputError naming ``path``."""
    from .volume import stream_volume

    genes = list(genes)
    names = [str(g) for g in (names or [field.genes[i] for i in genes])]
    info: dict = {}
    try:
        w = VolumeWriter(path, (len(genes), *grid.shape), scale_zyx=grid.scale, translate_zyx=grid.translate,
                         genes=names, contrast=contrast, pyramid=pyramid, slab_bytes=slab_bytes)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        for k0, k1, vals in stream_volume(field, grid, genes, masked=masked, threshold=threshold,
                                          slab_bytes=slab_bytes, planes_multiple=w.chunk_z,
                                          oversample=oversample, info=info):
            w.write(k0, vals)
            del vals  # the next slab is computed without this one alive
            if progress is not None:
                progress(k1, grid.nz)
        w.close()
    except OSError as exc:
        w.abort()
        raise write_error(path, exc) from None
    except BaseException:
        w.abort()
        raise
    return info

