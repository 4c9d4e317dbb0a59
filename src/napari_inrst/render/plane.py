"""Evaluate a field on a plane: occupancy mask, latent of the points inside tissue (in chunks),
then any genes decoded from that latent. Numpy in/out; works on any
:class:`~napari_inrst.field.api.ExpressionField`.

    img = render_plane(field, "LayerA", z=45.0, extent=(0, 2000, 0, 1500), shape=(384, 512))

Outside tissue (occupancy < ``threshold``) values are NaN, which napari shows as transparent.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from ..errors import InputError
from ..generators import run_to_end
from ..stack import gene_positions
from .cache import LatentCache, LatentEntry
from .grids import PlaneGrid, plane_from_extent, plane_shape_for
from .threads import render_threads

#: points per chunk: bounds memory (chunk × rank floats) and lets a worker stop between chunks
CHUNK = 32768
#: band-limited evaluation computes the latent where occupancy ≥ this (a band around the tissue,
#: so the cubic kernel near the edge reads real values)
BAND_THRESHOLD = 0.02


def gene_indices(field, genes) -> list[int]:
    """Gene names or indices → indices into ``field.genes``; InputError naming an unknown gene."""
    if genes is None:
        raise InputError(None, "no gene given")
    return gene_positions(field.genes, genes, error=lambda problem: InputError(None, problem))


def _eval_chunk(field, part, masked, threshold, occs):
    """(mask, latent of the masked points or None) for one chunk; appends occupancy to ``occs``."""
    fused = getattr(field, "latent_and_occupancy", None) if masked else None
    if fused is not None:  # one encoding pass for both (fields that offer it)
        lat, p = fused(part)
        p = np.asarray(p, dtype=np.float32)
        occs.append(p)
        m = p >= threshold
        return m, (np.asarray(lat, dtype=np.float32)[m] if m.any() else None)
    if masked:
        p = np.asarray(field.occupancy(part), dtype=np.float32)
        occs.append(p)
        m = p >= threshold
    else:
        m = np.ones(len(part), dtype=bool)
    if not m.any():
        return m, None
    return m, np.asarray(field.latent(part[m] if not m.all() else part), dtype=np.float32)


def iter_latent(field, xyz: np.ndarray, *, masked: bool = True, threshold: float = 0.5,
                chunk: int = CHUNK) -> Iterator[float]:
    """Generator: evaluate occupancy and the latent of ``xyz`` chunk by chunk.

    Yields the fraction done after each chunk (a worker can stop there) and *returns* the
    :class:`LatentEntry` (use ``entry = yield from iter_latent(...)``). With ``masked`` the
    trunk runs only on points inside tissue — unless the field offers
    ``latent_and_occupancy(xyz) -> (latent, occupancy)``, which shares one encoding pass.
    """
    n = len(xyz)
    masks, lats, occs = [], [], []
    for s in range(0, n, chunk):
        part = np.ascontiguousarray(xyz[s:s + chunk], dtype=np.float32)
        with render_threads():
            m, lat = _eval_chunk(field, part, masked, threshold, occs)
        masks.append(m)
        if lat is not None:
            lats.append(lat)
        yield min(1.0, (s + len(part)) / max(n, 1))
    mask = np.concatenate(masks) if masks else np.zeros(0, dtype=bool)
    if lats:
        lat = np.concatenate(lats)
    else:
        r = np.asarray(field.latent(np.zeros((1, 3), np.float32))).shape[1]
        lat = np.zeros((0, r), np.float32)
    occ = np.concatenate(occs) if occs else None
    return LatentEntry(mask=mask, latent=lat, occ=occ)


def latent_entry(field, xyz, **kw) -> LatentEntry:
    """:func:`iter_latent` run to the end."""
    return run_to_end(iter_latent(field, xyz, **kw))


def decode_entry(field, entry: LatentEntry, genes: Sequence[int], shape) -> np.ndarray:
    """(len(genes), *shape) float32 from a cached entry; NaN outside tissue."""
    k = len(genes)
    out = np.full((k, entry.mask.size), np.nan, dtype=np.float32)
    if len(entry.latent):
        vals = np.asarray(field.decode(entry.latent, list(genes)), dtype=np.float32)  # (m, k)
        if entry.mask.all():
            out[:] = vals.T
        else:
            out[:, entry.mask] = vals.T
    return out.reshape((k, *shape))


def plane_cache_key(field, grid: PlaneGrid, *, masked: bool = True, threshold: float = 0.5,
                    oversample: float | None = None):
    """(cache key, coarse grid or None) of what :func:`iter_plane` evaluates for ``grid``."""
    from .resample import coarse_axis, field_detail_um

    detail = field_detail_um(field) if oversample else None
    step = detail[0] / float(oversample) if detail else None
    if step is None or step <= grid.dx * 1.0001 or step <= grid.dy * 1.0001:
        return (grid.key(), bool(masked), float(threshold)), None
    x0, nx = coarse_axis(grid.x0, grid.x0 + (grid.nx - 1) * grid.dx, step)
    y0, ny = coarse_axis(grid.y0, grid.y0 + (grid.ny - 1) * grid.dy, step)
    coarse = PlaneGrid(grid.z, y0, x0, step, step, ny, nx)
    return (coarse.key(), bool(masked), "band"), coarse


def iter_plane(field, grid: PlaneGrid, genes: Sequence[int], *, cache: LatentCache | None = None,
               masked: bool = True, threshold: float = 0.5, chunk: int = CHUNK,
               oversample: float | None = None):
    """Generator over one plane: yields progress fractions, returns (k, ny, nx) float32.

    ``oversample`` (default None: exact) enables band-limited evaluation when the field declares
    its finest scale (:func:`~.resample.field_detail_um`) and the grid is finer than
    ``detail / oversample``: the field is sampled at that step and resampled (cubic) to the grid.
    A cache hit skips the trunk entirely (only the decode runs).
    """
    from .resample import cubic_weights, fill_nearest, resample2d

    key, coarse = plane_cache_key(field, grid, masked=masked, threshold=threshold, oversample=oversample)
    if coarse is None:
        entry = cache.get(field, key) if cache is not None else None
        if entry is None:
            entry = yield from iter_latent(field, grid.points(), masked=masked, threshold=threshold, chunk=chunk)
            if cache is not None:
                cache.put(field, key, entry)
        return decode_entry(field, entry, genes, grid.shape)
    entry = cache.get(field, key) if cache is not None else None
    if entry is None:
        entry = yield from iter_latent(field, coarse.points(), masked=masked, threshold=BAND_THRESHOLD, chunk=chunk)
        if cache is not None:
            cache.put(field, key, entry)
    step, y0, x0, ny, nx = coarse.dx, coarse.y0, coarse.x0, coarse.ny, coarse.nx
    vals = decode_entry(field, entry, genes, coarse.shape)
    vals = fill_nearest(vals, entry.mask.reshape(coarse.shape))
    Wy = cubic_weights(y0, step, ny, grid.y0, grid.dy, grid.ny)
    Wx = cubic_weights(x0, step, nx, grid.x0, grid.dx, grid.nx)
    out = resample2d(vals, Wy, Wx)
    if masked and entry.occ is not None:
        occ = resample2d(entry.occ.reshape(1, *coarse.shape), Wy, Wx)[0]
        out[:, occ < threshold] = np.nan
    return out


def evaluate_plane(field, grid: PlaneGrid, genes: Sequence[int], **kw) -> np.ndarray:
    """:func:`iter_plane` run to the end: (k, ny, nx) float32, NaN outside tissue."""
    return run_to_end(iter_plane(field, grid, genes, **kw))


def field_extent(field, margin: float = 0.0) -> tuple[float, float, float, float]:
    """(xmin, xmax, ymin, ymax) of the field's bounds, enlarged by ``margin`` × their size."""
    lo, hi = (np.asarray(b, dtype=float) for b in field.bounds())
    pad = margin * (hi - lo)
    return (lo[0] - pad[0], hi[0] + pad[0], lo[1] - pad[1], hi[1] + pad[1])


def render_plane(field, gene, z: float, extent=None, shape=512, *, masked: bool = True,
                 threshold: float = 0.5, cache: LatentCache | None = None,
                 oversample: float | None = None) -> np.ndarray:
    """The field at height ``z`` µm over ``extent = (xmin, xmax, ymin, ymax)`` (default: the
    field's bounds) on ``shape = (ny, nx)`` pixels (an int: that many on the longer side, square
    pixels). ``gene``: a name/index → (ny, nx); a list → (k, ny, nx). NaN outside tissue.
    ``oversample``: band-limited evaluation (see :func:`iter_plane`); None: every pixel exactly."""
    idx = gene_indices(field, gene)
    extent = field_extent(field) if extent is None else tuple(float(v) for v in extent)
    if np.isscalar(shape):
        shape = plane_shape_for(extent, int(shape))
    grid = plane_from_extent(z, extent, shape)
    out = evaluate_plane(field, grid, idx, cache=cache, masked=masked, threshold=threshold, oversample=oversample)
    return out[0] if isinstance(gene, (str, int, np.integer)) else out


def plane_grid_for(field, z: float, extent=None, shape=512) -> PlaneGrid:
    """The grid :func:`render_plane` samples (for the layer's scale/translate or file metadata)."""
    extent = field_extent(field) if extent is None else tuple(float(v) for v in extent)
    if np.isscalar(shape):
        shape = plane_shape_for(extent, int(shape))
    return plane_from_extent(z, extent, shape)


def auto_contrast(field, genes: Sequence[int], *, n: int = 16384, seed: int = 0,
                  percentiles=(1.0, 99.5), threshold: float = 0.5,
                  cache: LatentCache | None = None) -> list[tuple[float, float]]:
    """Stable contrast limits per gene: percentiles of the field at ``n`` random points inside
    tissue over its whole bounds (independent of the current view, so panning does not flicker).
    With a ``cache`` the latent of those points is kept: limits for another gene are a decode."""
    key = ("contrast-sample", int(n), int(seed), float(threshold))
    entry = cache.get(field, key) if cache is not None else None
    if entry is None:
        lo, hi = (np.asarray(b, dtype=float) for b in field.bounds())
        rng = np.random.default_rng(seed)
        xyz = (lo + rng.random((n, 3)) * (hi - lo)).astype(np.float32)
        entry = latent_entry(field, xyz, masked=True, threshold=threshold)
        if len(entry.latent) < 16:  # nothing inside: fall back to all points
            entry = latent_entry(field, xyz, masked=False)
        if cache is not None:
            cache.put(field, key, entry)
    vals = np.asarray(field.decode(entry.latent, list(genes)), dtype=np.float32)
    out = []
    for j in range(len(genes)):
        v = vals[:, j]
        v = v[np.isfinite(v)]
        a, b = (np.percentile(v, percentiles) if len(v) else (0.0, 1.0))
        if not b > a:
            b = a + 1.0
        out.append((float(a), float(b)))
    return out
