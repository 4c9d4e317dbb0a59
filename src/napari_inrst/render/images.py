"""Plain images from rendered planes: colour mapping and atomic PNG/JPEG/TIFF writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.atomic import atomic_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def write_image(path, img: np.ndarray):
    """RGB(A) uint8 image → PNG/JPEG/TIFF (atomic)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        import tifffile

        with atomic_path(path) as tmp:
            tifffile.imwrite(tmp, img, photometric="rgb")
        return path
    if suffix not in IMAGE_SUFFIXES:
        raise InputError(path, "image output must end in .png, .jpg or .tif")
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(img)).save(tmp, format="PNG" if suffix == ".png" else "JPEG")
    return path


def colorize(values: np.ndarray, contrast, colormap: str = "magma") -> np.ndarray:
    """(ny, nx) float → (ny, nx, 4) uint8 RGBA through a napari colormap; NaN → transparent."""
    from napari.utils.colormaps import ensure_colormap

    lo, hi = (float(c) for c in contrast)
    v = np.clip((np.asarray(values, dtype=np.float32) - lo) / max(hi - lo, 1e-12), 0, 1)
    finite = np.isfinite(v)
    rgba = ensure_colormap(colormap).map(np.where(finite, v, 0).ravel()).reshape(*v.shape, 4)
    rgba[~finite] = 0
    return (rgba * 255).round().astype(np.uint8)


