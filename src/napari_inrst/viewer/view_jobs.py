"""The View widget's background work, without Qt: generators over the core's render functions that
yield progress fractions and tagged results, for the widget's workers
(:class:`napari_inrst._qt.workers.LatestRequest`) — or for a test, run with :func:`napari_inrst.generators.run_to_end`.

Tagged results: ``("contrast", field, {gene: (lo, hi)})`` (the first look at a gene samples the
whole field for stable limits — off the UI thread), ``("plane", grid, genes, values, fine)`` (a
coarse preview first when the full request is expensive, then the fine plane) and
``("volume", grid, genes, values, key)``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..render.display import preview_levels
from ..render.plane import auto_contrast, iter_plane
from ..render.sections import field_placement, gene_contrast_sampled, lod_rank, needs_lod, section_update
from ..render.volume import iter_volume

#: the coarse preview of an expensive plane request has 1/COARSE_FACTOR of its pixels per side
COARSE_FACTOR = 4


def rescaled(gen, lo: float = 0.0, span: float = 1.0):
    """Relay ``gen``, mapping each progress fraction f it yields to ``lo + span·f``; returns its value."""
    while True:
        try:
            f = next(gen)
        except StopIteration as stop:
            return stop.value
        yield lo + span * float(f)


def _contrast(req, cache):
    if req.missing:
        lims = auto_contrast(req.field, [i for _, i in req.missing], cache=cache)
        yield ("contrast", req.field, {g: lim for (g, _), lim in zip(req.missing, lims)})


def plane_job(req, cache=None, coarse_factor: int = COARSE_FACTOR):
    """Evaluate a plane :class:`~napari_inrst.viewer.view_state.RenderRequest`: contrast of new
    genes, then the preview levels (coarse first when worth it), each a ``("plane", …)`` result."""
    yield from _contrast(req, cache)
    grid = req.grid
    for lvl in preview_levels(req.field, grid, req.oversample, coarse_factor):
        vals = yield from iter_plane(req.field, lvl, list(req.idx), cache=cache, oversample=req.oversample)
        yield ("plane", lvl, req.genes, vals, lvl is grid)


def volume_job(req, cache=None):
    """Evaluate a volume request: contrast of new genes, then ``("volume", grid, genes, values, key)``
    with ``key`` = (grid key, oversample), what :meth:`ViewState.volume_key` gives for it."""
    yield from _contrast(req, cache)
    vals = yield from iter_volume(req.field, req.grid, list(req.idx), cache=cache, oversample=req.oversample)
    yield ("volume", req.grid, req.genes, vals, (req.grid.key(), req.oversample))


def z_sweep_job(req, zs):
    """The plane of ``req`` (its grid's x/y) at each z of ``zs``: yields the fraction done,
    returns (genes, frames, ny, nx) float32 — the frames of a z-sweep movie."""
    grid = req.grid
    zs = [float(z) for z in zs]
    stack = np.empty((len(req.genes), len(zs), grid.ny, grid.nx), dtype=np.float32)
    for i, z in enumerate(zs):
        gen = iter_plane(req.field, dataclasses.replace(grid, z=z), list(req.idx), oversample=req.oversample)
        stack[:, i] = yield from rescaled(gen, i / len(zs), 1.0 / len(zs))
    return stack


def sections_job(stack, gene, cmap, rect, items, ranks: dict, stack_meta=None):
    """Colours (and, for large sections, the cells in ``rect`` or a stable subsample) of the section
    layers ``items`` = [(layer, section index), …] by ``gene``: yields ``(layer, gene, update, rect,
    moved)`` per layer for :func:`~napari_inrst.render.sections.apply_section_update`. ``ranks``
    caches each large section's subsample order between calls (filled here). ``stack_meta``: the
    shown field's; when it was trained on these sections, they are placed where it puts them
    (:func:`~napari_inrst.render.sections.field_placement`: its transforms with the refinement, and
    its deformations) and ``moved`` is True."""
    contrast = gene_contrast_sampled(stack, gene)
    g = stack.gene_index(gene)
    placement = field_placement(stack, stack_meta, [i for _, i in items]) if stack_meta else None
    for layer, i in items:
        s = stack[i]
        rank = None
        if needs_lod(s):
            rank = ranks.get(i)
            if rank is None:
                rank = ranks[i] = lod_rank(s.n_obs)
        placed = None if placement is None else placement[i]
        yield layer, gene, section_update(s, g, contrast, cmap, rect, None, rank, placed), rect, placed is not None
