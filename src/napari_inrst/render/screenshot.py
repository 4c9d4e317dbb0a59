"""Screenshots of the napari canvas for figures (no Qt import; napari objects are passed in).

:func:`screenshot` — the canvas at ``scale`` × (2–8), sharpened rather than widened, with colorbars
of the field layers and the scale bar in µm, on a white or black background; restores the viewer
afterwards. :func:`viewer_camera` / :func:`viewer_overlay` bridge napari < 0.9 and ≥ 0.9.
"""

from __future__ import annotations

import contextlib

import numpy as np

from ..errors import InputError
from .images import write_image


def viewer_camera(viewer):
    """The viewer's camera: ``viewer.scene.camera`` (napari ≥ 0.9; ``viewer.camera`` is deprecated
    there) or ``viewer.camera`` on older napari."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera



# --- screenshots ---------------------------------------------------------------------------
def viewer_overlay(viewer, name):
    canvas = getattr(viewer, "canvas", None)
    overlays = getattr(canvas, "overlays", None)
    if overlays is not None and hasattr(overlays, name):
        return getattr(overlays, name)
    return getattr(viewer, name, None)  # napari < 0.9


def _plane_layers_alike(layers) -> bool:
    """2D Image layers on one grid (the View widget's planes): they can be mixed pixel by pixel."""
    if len(layers) < 2:
        return False
    first = layers[0]
    for lyr in layers:
        data = getattr(lyr, "data", None)
        if getattr(lyr, "rgb", True) or data is None or np.ndim(data) != 2 or np.shape(data) != np.shape(first.data):
            return False
        if not (np.allclose(lyr.scale, first.scale) and np.allclose(lyr.translate, first.translate)):
            return False
    return True


def legend_entries(layers, labels=None, *, inks=None):
    """(label, colour ramp, contrast limits) per layer: what its colorbar shows. ``labels``: names
    (default: the layer's ``metadata['gene']`` or its name); ``inks``: the white-background inks."""
    from .figure import colormap_ramp, ink_ramp

    out = []
    for k, lyr in enumerate(layers):
        label = labels[k] if labels is not None else lyr.metadata.get("gene", lyr.name)
        ramp = ink_ramp(inks[k]) if inks is not None else colormap_ramp(lyr.colormap)
        out.append((label, ramp, tuple(float(c) for c in lyr.contrast_limits)))
    return out


@contextlib.contextmanager
def figure_style(viewer, layers=(), *, background: str = "black", scale_bar: bool = True, scale: float = 1.0):
    """Temporarily: background colour, the scale bar (text ×``scale``), napari's own colorbars of
    ``layers`` hidden (the figure draws its own, with gene names), and on white: two or more genes
    mixed as inks on white (:func:`~.figure.mix_on_white`, one temporary RGBA layer in place of the
    planes), a single gene translucent. Yields the inks used on white (None otherwise)."""
    if background not in ("white", "black"):
        raise InputError(None, f"background must be 'white' or 'black', got '{background}'")
    layers = list(layers)
    saved, temp, inks = [], None, None
    canvas = getattr(viewer, "canvas", None)
    if canvas is not None and hasattr(canvas, "background_color_override"):
        saved.append((canvas, "background_color_override", canvas.background_color_override))
        canvas.background_color_override = background
    sb = viewer_overlay(viewer, "scale_bar")
    if sb is not None:
        saved.append((sb, "visible", sb.visible))
        sb.visible = bool(scale_bar)
        if hasattr(sb, "color"):
            saved.append((sb, "color", sb.color))
            sb.color = "black" if background == "white" else "white"
        if hasattr(sb, "font_size"):
            saved.append((sb, "font_size", sb.font_size))
            sb.font_size = sb.font_size * float(scale)
        length = nice_bar_length(viewer)
        if hasattr(sb, "length") and length is not None:  # fixed in µm: ×N pixels at ×N
            saved.append((sb, "length", sb.length))
            sb.length = length
    for layer in layers:
        cb = getattr(layer, "colorbar", None)
        if cb is not None:
            saved.append((cb, "visible", cb.visible))
            cb.visible = False
    try:
        if background == "white" and _plane_layers_alike(layers):
            from .figure import inks_for, mix_on_white

            inks = inks_for([lyr.colormap for lyr in layers])
            rgba = mix_on_white(np.stack([np.asarray(lyr.data) for lyr in layers]),
                                [lyr.contrast_limits for lyr in layers], inks)
            top = max(list(viewer.layers).index(lyr) for lyr in layers)
            temp = viewer.add_image(rgba, rgb=True, name="inrst figure mix", scale=layers[0].scale,
                                    translate=layers[0].translate, blending="translucent_no_depth",
                                    interpolation2d="linear", units=getattr(layers[0], "units", None))
            viewer.layers.move(len(viewer.layers) - 1, top + 1)
            for lyr in layers:
                saved.append((lyr, "visible", lyr.visible))
                lyr.visible = False
        elif background == "white" and layers:
            ordered = sorted(layers, key=lambda lyr: list(viewer.layers).index(lyr))
            for k, lyr in enumerate(ordered):  # bottom one translucent (NaN transparent), others as on black
                if k == 0 and lyr.blending == "additive":
                    saved.append((lyr, "blending", lyr.blending))
                    lyr.blending = "translucent_no_depth"
        yield inks
    finally:
        if temp is not None:
            with contextlib.suppress(Exception):
                viewer.layers.remove(temp)
        for obj, attr, val in reversed(saved):
            with contextlib.suppress(Exception):
                setattr(obj, attr, val)


def nice_bar_length(viewer, fraction: float = 0.3) -> float | None:
    """A round scale-bar length (1, 2 or 5 × 10^k world units) near ``fraction`` of the canvas
    width at the current zoom; None without a canvas size."""
    import math

    size = getattr(getattr(viewer, "canvas", None), "size", None)
    zoom = float(viewer_camera(viewer).zoom)
    if not size or zoom <= 0:
        return None
    target = fraction * float(size[-1]) / zoom
    k = math.floor(math.log10(target))
    return float(max(m * 10.0**k for m in (1, 2, 5) if m * 10.0**k <= target))


@contextlib.contextmanager
def zoomed(viewer, factor: float):
    """Camera zoom × ``factor`` (restored after): a canvas ``factor`` × larger then shows the same
    field of view, sharper — what a ×N screenshot must do (napari keeps the zoom and widens it)."""
    cam = viewer_camera(viewer)
    old = cam.zoom
    cam.zoom = old * float(factor)
    try:
        yield
    finally:
        cam.zoom = old


def screenshot(viewer, path=None, *, scale: float = 4.0, layers=(), background: str = "black",
               colorbar: bool = True, scale_bar: bool = True, labels=None) -> np.ndarray:
    """A high-resolution canvas screenshot: ``scale`` × (1–8) the pixels of the same field of view
    (sharper, not wider), the µm scale bar and one colorbar per layer of ``layers`` — labelled with
    the gene name (``labels``, default ``metadata['gene']``/the layer name) — all sized ×``scale``;
    on white, genes mixed as inks (:func:`figure_style`). Written to ``path`` (PNG/JPEG/TIFF,
    atomically) if given."""
    from .figure import colorbar_legend, paste_top_right

    if not 1.0 <= float(scale) <= 8.0:
        raise InputError(None, f"screenshot scale must be 1…8, got {scale}")
    layers = list(layers)
    with figure_style(viewer, layers, background=background, scale_bar=scale_bar, scale=scale) as inks:
        entries = legend_entries(layers, labels, inks=inks) if colorbar and layers else []
        with zoomed(viewer, scale):
            img = viewer.screenshot(canvas_only=True, scale=float(scale), flash=False)
    if entries:
        img = paste_top_right(img, colorbar_legend(entries, scale=scale, background=background),
                              margin=int(8 * scale))
    if path is not None:
        write_image(path, img)
    return img

