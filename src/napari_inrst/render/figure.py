"""Figure composition without Qt: several genes on a white background, and colorbars that carry
the gene name, drawn into the exported image at the screenshot's scale.

On black, genes add up (additive blending: each gene a colour, overlaps mix towards white). On
white, addition saturates to white and a translucent top layer hides the ones below, so genes
are *subtracted* from white instead, like inks on paper: gene ``g`` with value ``t_g`` ∈ [0, 1]
(its contrast window) and ink colour ``c_g`` gives

    rgb = Π_g (1 − t_g · (1 − c_g))

— white where nothing is expressed, the gene's ink where one gene is, a darker mix where several
overlap; every gene stays visible (:func:`mix_on_white`).
"""

from __future__ import annotations

import numpy as np

#: ink colours for genes whose colormap is not a single hue (magma, viridis, …), in order of use:
#: magenta, green, blue, orange, dark cyan, red-brown — distinct on white and in print
INK_PALETTE = [(0.85, 0.0, 0.7), (0.0, 0.6, 0.0), (0.1, 0.35, 0.95), (0.95, 0.5, 0.0),
               (0.0, 0.55, 0.6), (0.6, 0.15, 0.1)]


def _cmap(colormap):
    from napari.utils.colormaps import ensure_colormap

    return ensure_colormap(colormap)


def tint_color(colormap) -> tuple[float, float, float] | None:
    """The hue of a single-hue colormap that rises linearly from black (napari's 'magenta',
    'green', …), else None (magma, viridis, gray, …)."""
    rgb = np.asarray(_cmap(colormap).map(np.array([0.0, 0.5, 1.0]))[:, :3], dtype=float)
    top = rgb[2]
    if rgb[0].max() > 0.05 or np.abs(rgb[1] - top / 2).max() > 0.05 or top.min() > 0.8:
        return None  # not from black, not linear, or (near) white: no use as an ink on white
    return tuple(float(v) for v in top)


def inks_for(colormaps) -> list[tuple[float, float, float]]:
    """One ink colour per gene on white: its own hue for single-hue colormaps, otherwise the first
    palette colour not taken yet (so two genes never share an ink)."""
    inks: list = [tint_color(c) for c in colormaps]
    used = [i for i in inks if i is not None]
    for k, ink in enumerate(inks):
        if ink is None:
            free = [p for p in INK_PALETTE if all(np.linalg.norm(np.subtract(p, u)) > 0.45 for u in used)]
            inks[k] = (free or INK_PALETTE)[0]
            used.append(inks[k])
    return inks


def _unit(values, contrast) -> np.ndarray:
    lo, hi = (float(c) for c in contrast)
    t = (np.asarray(values, dtype=np.float32) - lo) / max(hi - lo, 1e-12)
    return np.clip(np.where(np.isfinite(t), t, 0.0), 0.0, 1.0)


def mix_on_white(values, contrasts, inks) -> np.ndarray:
    """(k, ny, nx) gene values → (ny, nx, 4) float32 RGBA on white (module docstring); alpha 0
    where every gene is NaN (outside tissue), 1 elsewhere."""
    values = np.asarray(values, dtype=np.float32)
    rgb = np.ones((*values.shape[1:], 3), dtype=np.float32)
    for v, c, ink in zip(values, contrasts, inks):
        t = _unit(v, c)[..., None]
        rgb *= 1.0 - t * (1.0 - np.asarray(ink, dtype=np.float32))
    alpha = np.isfinite(values).any(axis=0).astype(np.float32)
    return np.concatenate([rgb, alpha[..., None]], axis=-1)


def ink_ramp(ink, n: int = 256) -> np.ndarray:
    """(n, 4) RGBA from white (0) to ``ink`` (1): the colorbar of a gene mixed on white."""
    t = np.linspace(0.0, 1.0, n, dtype=np.float32)[:, None]
    rgb = 1.0 - t * (1.0 - np.asarray(ink, dtype=np.float32))
    return np.concatenate([rgb, np.ones((n, 1), np.float32)], axis=1)


def colormap_ramp(colormap, n: int = 256) -> np.ndarray:
    return np.asarray(_cmap(colormap).map(np.linspace(0.0, 1.0, n)), dtype=np.float32)


def _font(px: float):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=max(6, int(round(px))))
    except TypeError:  # Pillow < 10.1: fixed bitmap font
        return ImageFont.load_default()


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def colorbar_legend(entries, *, scale: float = 1.0, background: str = "black") -> np.ndarray:
    """RGBA uint8 image with one vertical colorbar per entry ``(label, ramp (n, 4), (lo, hi))``,
    side by side: the label (gene name) above, the bar, its high and low values beside it. Sizes
    are screen sizes × ``scale`` (a ×4 screenshot gets ×4 colorbars)."""
    from PIL import Image, ImageDraw

    s = float(scale)
    fg = (0, 0, 0, 255) if background == "white" else (255, 255, 255, 255)
    bg = (255, 255, 255, 200) if background == "white" else (0, 0, 0, 160)
    font = _font(12 * s)
    bar_w, bar_h, gap, pad = int(16 * s), int(120 * s), int(10 * s), int(6 * s)
    probe = ImageDraw.Draw(Image.new("RGBA", (1, 1)))

    def tw(text):
        box = probe.textbbox((0, 0), text, font=font)
        return box[2] - box[0], box[3] - box[1]

    cols = []
    for label, _, (lo, hi) in entries:
        tick_w = max(tw(_fmt(lo))[0], tw(_fmt(hi))[0])
        cols.append(max(tw(str(label))[0], bar_w + int(4 * s) + tick_w))
    label_h = tw("Ag")[1] + int(4 * s)
    W = sum(cols) + gap * (len(cols) - 1) + 2 * pad
    H = label_h + bar_h + 2 * pad
    img = Image.new("RGBA", (max(W, 1), max(H, 1)), bg)
    d = ImageDraw.Draw(img)
    x = pad
    for (label, ramp, (lo, hi)), cw in zip(entries, cols):
        d.text((x, pad), str(label), fill=fg, font=font)
        y0 = pad + label_h
        rgba = (np.clip(np.asarray(ramp, dtype=np.float32), 0, 1) * 255).astype(np.uint8)
        col = rgba[::-1][np.linspace(0, len(rgba) - 1, bar_h).astype(int)]  # high at the top
        bar = np.repeat(col[:, None, :], bar_w, axis=1)
        bar[..., 3] = 255
        img.paste(Image.fromarray(bar, "RGBA"), (x, y0))
        d.rectangle([x, y0, x + bar_w - 1, y0 + bar_h - 1], outline=fg, width=max(1, int(s)))
        d.text((x + bar_w + int(4 * s), y0), _fmt(hi), fill=fg, font=font)
        d.text((x + bar_w + int(4 * s), y0 + bar_h - tw(_fmt(lo))[1] - int(2 * s)), _fmt(lo), fill=fg, font=font)
        x += cw + gap
    return np.asarray(img)


def paste_top_right(img: np.ndarray, overlay: np.ndarray, margin: int = 8) -> np.ndarray:
    """Alpha-composite ``overlay`` (RGBA uint8) into the top-right corner of ``img`` (RGB(A) uint8)."""
    out = np.array(img, copy=True)
    h, w = overlay.shape[:2]
    H, W = out.shape[:2]
    h, w = min(h, H - margin), min(w, W - margin)
    if h <= 0 or w <= 0:
        return out
    y0, x0 = margin, W - margin - w
    ov = overlay[:h, :w].astype(np.float32)
    a = ov[..., 3:4] / 255.0
    region = out[y0:y0 + h, x0:x0 + w, :3].astype(np.float32)
    out[y0:y0 + h, x0:x0 + w, :3] = np.round(ov[..., :3] * a + region * (1 - a)).astype(np.uint8)
    return out
