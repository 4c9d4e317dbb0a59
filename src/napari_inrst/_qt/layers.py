"""Layer helpers shared by the widgets (napari public API only, no Qt)."""

from __future__ import annotations

from ..render.display import set_layer_image


def update_or_add_image(viewer, data, *, layer=None, name: str | None = None, scale=None, translate=None,
                        contrast_limits=None, **add_kwargs):
    """Show ``data`` in an Image layer: update ``layer`` (or the layer called ``name``) when it is
    still in the viewer, else add a new one with ``name`` and ``add_kwargs`` (colormap, blending,
    units, metadata, …; used only when adding). Returns ``(layer, added)``.

    An update replaces data and placement (``scale``/``translate`` are touched only when they
    changed, see :func:`~napari_inrst.render.display.set_layer_image`) and ``contrast_limits`` when
    given and different."""
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
