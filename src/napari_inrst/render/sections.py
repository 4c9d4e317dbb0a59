"""Measured sections on screen, without Qt: colours computed once per gene, statistics on a sample
of cells (never a dense concatenation of the stack), and level of detail for large sections.

napari spends ~1–4 µs per point each time a Points layer's data or colours are set, and drawing
grows with the points. A section with more than :data:`LOD_CAP` cells is therefore drawn as at
most ``LOD_CAP`` of them: all cells inside the view when that many or fewer are in view (zoomed
in: full resolution), else a stable random subsample of those in view (zoomed out; the field
plane under them is the zoomed-out picture), always exactly ``LOD_CAP`` points (the layer is
updated in place). :func:`lod_indices` picks them; the View widget recomputes them in a worker on
debounced camera changes, the Sections widget recolours and moves the cells shown in a worker.
"""

from __future__ import annotations

import contextlib

import numpy as np

#: most points drawn per section layer: one napari update of this many points (data + colours) took
#: ~80 ms of UI time here (napari converts every point's symbol on each GPU upload, ~3.5 µs a point)
LOD_CAP = 12_000
#: metadata key of a section layer drawn with level of detail: {"idx": indices of the cells shown}
LOD_KEY = "inrst_lod"
#: cells sampled for statistics (contrast limits, default gene)
STAT_SAMPLE = 200_000


def gene_values(section, g: int) -> np.ndarray:
    """(n,) float32 values of gene column ``g`` of a section, without densifying the whole matrix."""
    X = getattr(getattr(section, "adata", None), "X", None)
    if X is None:
        return np.asarray(section.X[:, g], dtype=np.float32)
    col = X[:, g]
    if hasattr(col, "toarray"):
        col = col.toarray()
    return np.asarray(col, dtype=np.float32).ravel()


def sample_rows(n: int, k: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``min(n, k)`` rows, all rows when ``n <= k``."""
    if n <= k:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def _sampled_matrix(stack, n_max: int, seed: int = 0):
    """(rows, genes) float32 of at most ``n_max`` cells drawn across sections (in proportion)."""
    sizes = np.array([s.n_obs for s in stack], dtype=float)
    share = np.maximum(1, np.floor(n_max * sizes / max(sizes.sum(), 1))).astype(int)
    parts = []
    for s, k in zip(stack, share):
        X = s.adata.X if hasattr(s, "adata") else s.X
        rows = sample_rows(s.n_obs, int(k), seed)
        sub = X[rows]
        parts.append(np.asarray(sub.toarray() if hasattr(sub, "toarray") else sub, dtype=np.float32))
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, stack.n_genes), np.float32)


def default_gene_sampled(stack, n_max: int = 20_000, seed: int = 0) -> str:
    """The most variable gene over a sample of at most ``n_max`` cells (all cells of small stacks)."""
    X = _sampled_matrix(stack, n_max, seed)
    return stack.genes[int(np.argmax(X.var(axis=0)))] if len(X) else stack.genes[0]


def gene_contrast_sampled(stack, gene: str, n_max: int = STAT_SAMPLE, percentiles=(1.0, 99.5),
                          seed: int = 0) -> tuple[float, float]:
    """Shared contrast limits of a gene across sections: percentiles over at most ``n_max`` cells."""
    g = stack.gene_index(gene)
    sizes = np.array([s.n_obs for s in stack], dtype=float)
    share = np.maximum(1, np.floor(n_max * sizes / max(sizes.sum(), 1))).astype(int)
    v = np.concatenate([gene_values(s, g)[sample_rows(s.n_obs, int(k), seed)] for s, k in zip(stack, share)]) \
        if len(stack) else np.zeros(0, np.float32)
    lo, hi = np.percentile(v, percentiles) if len(v) else (0.0, 1.0)
    if not hi > lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def point_rgba(values, contrast, colormap: str = "viridis") -> np.ndarray:
    """(n, 4) float32 colours of values through a napari colormap and contrast limits (computed
    once per gene; the layers' borders are transparent, so small points show no grey haze)."""
    from napari.utils.colormaps import ensure_colormap

    lo, hi = (float(c) for c in contrast)
    t = np.clip((np.asarray(values, dtype=np.float32) - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    t = np.where(np.isfinite(t), t, 0.0)
    return np.asarray(ensure_colormap(colormap).map(t), dtype=np.float32).reshape(-1, 4)


def lod_rank(n: int, seed: int = 0) -> np.ndarray:
    """(n,) int32: each cell's position in a fixed random order (lower = shown first)."""
    rank = np.empty(n, dtype=np.int32)
    rank[np.random.default_rng(seed).permutation(n)] = np.arange(n, dtype=np.int32)
    return rank


def view_rect(center_yx, zoom: float, canvas_hw, margin: float = 0.1):
    """(xmin, xmax, ymin, ymax) in µm of a 2D view, enlarged by ``margin`` of its size."""
    cy, cx = (float(v) for v in center_yx)
    h, w = (float(v) for v in canvas_hw)
    hy, hx = (1 + margin) * h / 2 / zoom, (1 + margin) * w / 2 / zoom
    return (cx - hx, cx + hx, cy - hy, cy + hy)


def lod_cap(cap=None) -> int:
    """``cap``, or :data:`LOD_CAP` as it is now (read at each call: tests and benchmarks lower it)."""
    return int(LOD_CAP if cap is None else cap)


def lod_indices(xy: np.ndarray, rank: np.ndarray, rect=None, cap: int | None = None) -> np.ndarray:
    """Sorted indices of the cells to draw: every cell when there are at most ``cap``
    (:func:`lod_cap`), else exactly ``cap`` of them — the section's :func:`extreme_cells` (so the
    layer's extent never changes), then the cells inside ``rect`` (all of them when few enough: full
    resolution in view; else the first in the fixed random order, a stable subsample that does not
    flicker when panning), then, to fill up, cells outside it in the same order. A fixed number
    of points: napari updates a layer in place instead of resizing its colour, size and symbol
    arrays."""
    n, cap = len(xy), lod_cap(cap)
    if n <= cap:
        return np.arange(n)
    ext = extreme_cells(xy)
    key = np.asarray(rank, dtype=np.int64).copy()
    if rect is not None:
        xmin, xmax, ymin, ymax = rect
        outside = (xy[:, 0] < xmin) | (xy[:, 0] > xmax) | (xy[:, 1] < ymin) | (xy[:, 1] > ymax)
        key[outside] += n  # after every cell in view
    key[ext] = -1
    m = max(cap, len(ext) + 1)
    return np.sort(np.argpartition(key, m - 1)[:m])


def extreme_cells(xy: np.ndarray) -> np.ndarray:
    """Indices of the cells with the smallest and largest x and y (at most 4): a subset holding them
    has the extent of the whole section."""
    if not len(xy):
        return np.zeros(0, dtype=np.intp)
    return np.unique([np.argmin(xy[:, 0]), np.argmax(xy[:, 0]), np.argmin(xy[:, 1]), np.argmax(xy[:, 1])])


def points_zyx(section, idx=None) -> np.ndarray:
    """(n, 3) world coordinates (z, y, x) in µm of a section's cells (``idx``: those only)."""
    xy = section.xy if idx is None else section.xy[idx]
    return np.column_stack([np.full(len(xy), float(section.z)), xy[:, 1], xy[:, 0]])


def field_placement(stack, stack_meta, indices=None) -> dict | None:
    """Where the model with ``stack_meta`` (``FieldModel.stack_meta``) puts the cells of ``stack``'s
    sections: ``{index: (xy (n, 2) stack frame µm, z µm)}`` for ``indices`` (default all) — the
    model's transforms (the rigid alignment with the field-driven refinement composed in) and its
    per-section deformations (``stack_meta['deformation']``, the enabled ones) applied to each
    section's input coordinates, as ``napari-inrst map`` does. None when the model was not trained
    on these sections (other names) or records no placement."""
    from ..align.deform import deformations_from_meta
    from ..align.mapping import place_points

    meta = stack_meta or {}
    names, mats, zs = meta.get("names"), meta.get("transforms"), meta.get("z")
    if not names or not mats or not zs or [str(n) for n in names] != [str(n) for n in stack.names]:
        return None
    if len(mats) != len(names) or len(zs) != len(names):
        return None
    try:
        defs = deformations_from_meta(meta)
    except Exception:  # noqa: BLE001 - an unreadable block: the transforms alone (map names the problem)
        defs = []
    # the section's coordinates as in its file (the stack's unit factor may have changed since)
    uf = float(getattr(stack, "unit_factor", 1.0) or 1.0)
    out = {}
    for k in (range(len(stack)) if indices is None else indices):
        xyz = place_points(meta, k, np.asarray(stack[k].xy_input, dtype=np.float64) / uf, defs)
        out[k] = (xyz[:, :2], float(zs[k]))
    return out


def needs_lod(section, cap: int | None = None) -> bool:
    return int(section.n_obs) > lod_cap(cap)


def section_update(section, g: int, contrast, colormap: str, rect=None, cap: int | None = None, rank=None,
                   placed=None):
    """What a section layer shows (for a worker): ``(idx or None, zyx, values, rgba)`` — ``idx``
    None when every cell is drawn. ``placed``: ``(xy, z)`` of the cells elsewhere than the stack
    puts them (where a model puts them, :func:`field_placement`)."""
    values = gene_values(section, g)
    xy, z = (section.xy, float(section.z)) if placed is None else placed
    idx = None
    if needs_lod(section, cap):
        rank = lod_rank(section.n_obs) if rank is None else rank
        idx = lod_indices(xy, rank, rect, cap)
        values = values[idx]
    pts = xy if idx is None else xy[idx]
    zyx = np.column_stack([np.full(len(pts), z), pts[:, 1], pts[:, 0]])
    return idx, zyx, values, point_rgba(values, contrast, colormap)


def apply_section_update(layer, gene: str, update, *, move: bool = True) -> None:
    """Set a section layer from :func:`section_update` (on the UI thread): data (if the displayed
    cells changed or ``move``), the face colours, the gene's values as feature. The border stays
    transparent (set once when the layer is made: no grey antialiasing band, one GPU upload less)."""
    idx, zyx, values, rgba = update
    md = layer.metadata
    old = md.get(LOD_KEY, {}).get("idx") if isinstance(md.get(LOD_KEY), dict) else None
    same = zyx is None or (idx is None and old is None and len(layer.data) == len(zyx)) or \
        (idx is not None and old is not None and len(old) == len(idx) and np.array_equal(old, idx))
    # every setter below would re-send all points to the GPU node (napari converts each point's
    # symbol on each); hold the layer's events and send once: 4× less UI time per update
    blocker = layer.events.blocker_all() if hasattr(layer.events, "blocker_all") else contextlib.nullcontext()
    with blocker:
        if move or not same:
            layer.data = zyx
        layer.face_color = rgba  # direct colours first: the old gene's column may then go
        layer.features = {gene: values}
    layer.refresh()
    md["gene"] = gene
    if idx is not None:  # the same cells: what they were picked for (the View's rect) still holds
        kept = old is not None and len(old) == len(idx) and np.array_equal(old, idx)
        md[LOD_KEY] = dict(md[LOD_KEY], idx=idx) if kept else {"idx": idx}
    else:
        md.pop(LOD_KEY, None)
