"""The Train widget's preview layer: one additive Image layer (magma) of the fit's gene at the
viewer's z, in µm, updated in place (only what changed is set: cheap on the UI thread)."""

from __future__ import annotations

import numpy as np

from ..viewer.session import FIELD_KEY
from ..viewer.train_state import preview_contrast, preview_placement
from .layers import update_or_add_image

PREVIEW_KEY = "inrst_preview"


def _style() -> dict:
    return dict(colormap="magma", blending="additive", metadata={PREVIEW_KEY: True}, units="µm",
                axis_labels=("y", "x"))


def preview_layer(viewer, create_for=None):
    """The preview layer; created (empty) over the training sections of the stack ``create_for``
    when there is none, so it is in place before the first preview arrives."""
    layer = next((lyr for lyr in viewer.layers if lyr.metadata.get(PREVIEW_KEY)), None)
    if layer is None and create_for is not None:
        c = create_for.coords(create_for.training_sections())
        shape, scale, translate = preview_placement(c.min(0), c.max(0))
        layer = viewer.add_image(np.zeros(shape, np.float32), name="Field preview", scale=scale,
                                 translate=translate, contrast_limits=(0.0, 1.0), **_style())
    return layer


def show_preview(viewer, pv: dict | None, field=None):
    """Show preview ``pv`` (``image``, ``scale``, ``translate``, ``gene``, ``z``) and keep
    ``field`` in the layer's metadata (``inrst_field``: other widgets find the field there)."""
    layer = preview_layer(viewer)
    if pv is not None:
        name = f"Field preview: {pv['gene']}"
        clim = preview_contrast(pv["image"], None if layer is None else layer.contrast_limits)
        layer, _ = update_or_add_image(viewer, pv["image"], layer=layer, name=name, scale=pv["scale"],
                                       translate=pv["translate"], contrast_limits=clim, **_style())
        if layer.name != name:
            layer.name = name
        layer.metadata["z_um"] = pv["z"]
    if layer is not None and field is not None:
        layer.metadata[FIELD_KEY] = field
    return layer
