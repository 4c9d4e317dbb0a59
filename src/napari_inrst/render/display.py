"""Display helpers for the widgets (no Qt import; napari layers and Qt-like objects are passed in):
cheap layer updates, the preview levels of a plane request, throttled progress, and the stacking
rules of results in the layer list (new results on top, finished previews/overlays hidden).
"""

from __future__ import annotations

import numpy as np

#: metadata key marking a layer as a temporary preview/overlay that a later result supersedes
#: (Align's before/after overlay); ``hide_superseded`` hides them, and Train's preview
#: (``PREVIEW_KEY``) too
OVERLAY_KEY = "inrst_overlay"
PREVIEW_KEY = "inrst_preview"
#: metadata key of the View widget's field layers (planes, volumes)
RENDER_KEY = "inrst_render"


def canvas_hw(viewer) -> tuple:
    """(height, width) of the viewer's canvas in pixels ((600, 800) before it is shown)."""
    size = getattr(getattr(viewer, "canvas", None), "size", None)
    if size is None or min(size) <= 1:
        return (600, 800)
    return tuple(size)


def set_layer_image(layer, data, scale, translate) -> None:
    """Update an Image layer's data and placement, touching scale/translate only when they changed
    (each assignment refreshes the layer: ~7 ms apiece in napari 0.9, for nothing when only z moved)."""
    if not np.allclose(np.asarray(layer.scale, float), np.asarray(scale, float), rtol=1e-9, atol=0):
        layer.scale = scale
    if not np.allclose(np.asarray(layer.translate, float), np.asarray(translate, float), rtol=1e-9, atol=1e-9):
        layer.translate = translate
    layer.data = data


def update_or_add_image(viewer, data, *, layer=None, name: str | None = None, scale=None, translate=None,
                        contrast_limits=None, **add_kwargs):
    """Show ``data`` in an Image layer: update ``layer`` (or the layer called ``name``) when it is
    still in the viewer, else add a new one with ``name`` and ``add_kwargs`` (colormap, blending,
    units, metadata, …; used only when adding). Returns ``(layer, added)``.

    An update replaces data and placement (``scale``/``translate`` are touched only when they
    changed, see :func:`set_layer_image`) and ``contrast_limits`` when given and different."""
    if layer is None or layer not in viewer.layers:
        layer = viewer.layers[name] if name is not None and name in viewer.layers else None
    if layer is None:
        kw = dict(add_kwargs)
        for key, value in (("scale", scale), ("translate", translate), ("contrast_limits", contrast_limits)):
            if value is not None:
                kw[key] = value
        return viewer.add_image(data, name=name, **kw), True
    set_layer_image(layer, data, layer.scale if scale is None else scale,
                    layer.translate if translate is None else translate)
    if contrast_limits is not None and tuple(layer.contrast_limits) != tuple(contrast_limits):
        layer.contrast_limits = contrast_limits
    return layer, False


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
    return [lyr for lyr in layers if lyr.visible and id(lyr) not in keep_ids
            and any(getattr(lyr, "metadata", {}).get(k) for k in (OVERLAY_KEY, PREVIEW_KEY))]


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


def field_layers(viewer) -> list:
    """The View widget's field layers (planes and volumes) in the viewer."""
    return [lyr for lyr in viewer.layers if RENDER_KEY in getattr(lyr, "metadata", {})]


def colorbar_of(layer):
    """A layer's colorbar overlay: ``colorbar`` (Image) or ``face_colorbar`` (Points); None if none."""
    return getattr(layer, "colorbar", None) or getattr(layer, "face_colorbar", None)


def show_own_colorbars(viewer, layers) -> None:
    """Colorbars of ``layers`` on, every other layer's off: the canvas explains what was just shown
    (QC panels, uncertainty), not an earlier result's colour scale."""
    own = {id(lyr) for lyr in layers}
    for lyr in viewer.layers:
        cb = colorbar_of(lyr)
        if cb is not None:
            cb.visible = id(lyr) in own


def result_on_top(viewer, layer, *, above_points: bool = False) -> None:
    """Place a new result over the earlier ones: above the View's field planes/volumes (never
    buried under an opaque plane); with ``above_points`` on top of everything."""
    if above_points:
        move_to_top(viewer, layer)
    else:
        move_above(viewer, layer, field_layers(viewer))
    hide_superseded(viewer, keep=[layer])


def labels_legend_html(layer, labels, names=None) -> str:
    """Rich text: a colour swatch per label value of a Labels layer and its name (default
    "domain k"), so the user can tell which colour is which domain."""
    import html

    items = []
    for k, lab in enumerate(labels):
        c = np.asarray(layer.get_color(int(lab)), dtype=float).ravel()
        hexc = "#" + "".join(f"{int(round(255 * v)):02x}" for v in c[:3]) if c.size >= 3 else "#888888"
        name = names[k] if names is not None else f"domain {int(lab)}"
        items.append(f"<span style='color:{hexc}'>&#9632;</span>&nbsp;{html.escape(str(name))}")
    return " &nbsp; ".join(items)
