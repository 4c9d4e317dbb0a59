"""The Train widget's previews: a live picture in the widget (:class:`PreviewThumb`) and one
additive Image layer (magma) of the fit's gene at the viewer's z, in µm, updated in place (only
what changed is set)."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QLabel

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


def preview_rgba(img: np.ndarray, clim, colormap: str = "magma") -> np.ndarray:
    """(ny, nx, 4) uint8 colours of a preview image (NaN: transparent) through ``clim``."""
    from napari.utils.colormaps import ensure_colormap

    lo, hi = (float(c) for c in clim)
    finite = np.isfinite(img)
    t = np.clip((np.where(finite, img, lo) - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    rgba = np.asarray(ensure_colormap(colormap).map(t.ravel()), dtype=np.float32).reshape(*img.shape, 4)
    rgba[..., 3] = finite
    return np.ascontiguousarray(np.round(rgba * 255).astype(np.uint8))


class PreviewThumb(QLabel):
    """The live preview inside the Train widget: a fixed-size picture of the fit's gene at z.
    Updating it repaints this small widget only; an update of a layer redraws the whole napari
    canvas (every layer; 90–150 ms in software OpenGL here), so while training the canvas layer
    is updated only on request (:attr:`TrainWidget.live_canvas`) and when the fit ends."""

    W, H = 240, 160

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setFixedSize(self.W, self.H)  # a new picture never re-lays out the dock
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setToolTip("Live preview of the fit (the gene chosen above, at the viewer's z)")
        self._clim = None
        self.shown = 0  # previews shown (tests)

    def show_preview(self, pv: dict | None) -> None:
        if pv is None:
            return
        img = np.asarray(pv["image"], dtype=np.float32)
        self._clim = preview_contrast(img, self._clim) or self._clim
        rgba = preview_rgba(img[::-1] if pv["scale"][0] < 0 else img, self._clim)
        h, w = rgba.shape[:2]
        qimg = QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()
        pix = QPixmap.fromImage(qimg).scaled(self.W, self.H - 18, Qt.AspectRatioMode.KeepAspectRatio,
                                             Qt.TransformationMode.FastTransformation)
        self.setPixmap(pix)
        self.setToolTip(f"Live preview: {pv['gene']} at z = {pv['z']:.1f} µm")
        self.shown += 1
