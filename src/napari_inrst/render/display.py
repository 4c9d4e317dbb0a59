"""Display helpers for the widgets (no Qt import; napari layers and Qt-like objects are passed in):
cheap layer updates, the preview levels of a plane request, throttled progress, and the stacking
rules of results in the layer list (new results on top, finished previews/overlays hidden).
"""

from __future__ import annotations

import numpy as np

#: metadata key marking a layer as a temporary preview/overlay that a later result supersedes
#: (Train's "Field preview", Align's before/after overlay); ``hide_superseded`` hides them
OVERLAY_KEY = "inrst_overlay"


def set_layer_image(layer, data, scale, translate) -> None:
    """Update an Image layer's data and placement, touching scale/translate only when they changed
    (each assignment refreshes the layer: ~7 ms apiece in napari 0.9, for nothing when only z moved)."""
    if not np.allclose(np.asarray(layer.scale, float), np.asarray(scale, float), rtol=1e-9, atol=0):
        layer.scale = scale
    if not np.allclose(np.asarray(layer.translate, float), np.asarray(translate, float), rtol=1e-9, atol=1e-9):
        layer.translate = translate
    layer.data = data


def preview_levels(field, grid, oversample, factor: int = 4) -> list:
    """The grids a plane request evaluates, coarse preview first: ``[grid.coarsened(factor), grid]``
    when the full request is expensive, else ``[grid]``. With band-limited sampling the full request
    costs its lattice (often little more than the preview) — then one level saves a layer update
    and a redraw per step while the user scrubs z."""
    from .plane import plane_cache_key

    if grid.n < 128 * 128:
        return [grid]
    preview = grid.coarsened(factor)
    _, lattice = plane_cache_key(field, grid, oversample=oversample)
    cost = lattice.n if lattice is not None else grid.n
    if cost <= 4 * preview.n:
        return [grid]
    return [preview, grid]


def set_progress(bar, fraction, step: int = 5) -> None:
    """Set a progress bar (0–100) to ``fraction`` only when it moved by ``step`` % or reached an end:
    every repaint costs the UI thread time while a worker streams fractions."""
    v = int(100 * float(fraction))
    old = bar.value()
    if v != old and (abs(v - old) >= step or v in (0, 100) or v < old):
        bar.setValue(v)


def superseded(layers, keep=()) -> list:
    """Visible layers marked as temporary previews/overlays (``OVERLAY_KEY`` in their metadata),
    except those in ``keep``: what a new result should hide."""
    keep_ids = {id(k) for k in keep}
    return [lyr for lyr in layers
            if getattr(lyr, "metadata", {}).get(OVERLAY_KEY) and lyr.visible and id(lyr) not in keep_ids]


def hide_superseded(viewer, keep=()) -> list:
    """Hide finished previews/overlays (see :func:`superseded`) now that a newer result is shown;
    returns the layers hidden (they stay in the layer list; the user can show them again)."""
    hidden = superseded(viewer.layers, keep)
    for lyr in hidden:
        lyr.visible = False
    return hidden


def move_to_top(viewer, layer) -> None:
    """Put ``layer`` on top of the layer list (drawn last: a new result is never buried)."""
    layers = list(viewer.layers)
    i = layers.index(layer)
    if i != len(layers) - 1:
        viewer.layers.move(i, len(layers))


def move_above(viewer, layer, below) -> None:
    """Put ``layer`` directly above every layer in ``below`` that is under it (keeps it visible over
    opaque planes of earlier results)."""
    layers = list(viewer.layers)
    idx = [layers.index(b) for b in below if b in layers]
    if not idx:
        return
    i = layers.index(layer)
    top = max(idx)
    if i < top:
        viewer.layers.move(i, top + 1)
