"""Figures and files from rendered fields (no Qt import; napari objects are passed in).

* :func:`screenshot` — the canvas at ``scale`` × (2–8) with colorbars of the field layers and the
  scale bar in µm, on a white or black background; restores the viewer afterwards.
* :func:`save_volume` — a volume as OME-Zarr (NGFF 0.4, axes c/z/y/x in micrometer) or ImageJ
  TIFF (voxel size in µm); :func:`open_volume_writer` streams slab by slab for big volumes.
* :func:`movie` — a z sweep or rotation through the optional napari-animation plugin.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.atomic import atomic_path

ZARR_SUFFIXES = (".zarr", ".ome.zarr")
TIFF_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def volume_format(path) -> str:
    """'zarr' or 'tiff' from the file name; InputError otherwise."""
    name = str(path).lower().rstrip("/")
    if name.endswith(ZARR_SUFFIXES):
        return "zarr"
    if name.endswith(TIFF_SUFFIXES):
        return "tiff"
    raise InputError(path, "volume output must end in .tif/.tiff or .zarr/.ome.zarr")


# --- screenshots ---------------------------------------------------------------------------
def _overlay(viewer, name):
    canvas = getattr(viewer, "canvas", None)
    overlays = getattr(canvas, "overlays", None)
    if overlays is not None and hasattr(overlays, name):
        return getattr(overlays, name)
    return getattr(viewer, name, None)  # napari < 0.9


@contextlib.contextmanager
def figure_style(viewer, layers=(), *, background: str = "black", colorbar: bool = True, scale_bar: bool = True):
    """Temporarily: background colour, colorbars on ``layers``, the scale bar, blending suited to
    the background (translucent on white, where additive blending would wash out)."""
    if background not in ("white", "black"):
        raise InputError(None, f"background must be 'white' or 'black', got '{background}'")
    saved = []
    canvas = getattr(viewer, "canvas", None)
    if canvas is not None and hasattr(canvas, "background_color_override"):
        saved.append((canvas, "background_color_override", canvas.background_color_override))
        canvas.background_color_override = background
    sb = _overlay(viewer, "scale_bar")
    if sb is not None:
        saved.append((sb, "visible", sb.visible))
        sb.visible = bool(scale_bar)
        if hasattr(sb, "color"):
            saved.append((sb, "color", sb.color))
            sb.color = "black" if background == "white" else "white"
    for i, layer in enumerate(layers):
        cb = getattr(layer, "colorbar", None)
        if cb is not None:
            saved.append((cb, "visible", cb.visible))
            cb.visible = bool(colorbar)
            if hasattr(cb, "color"):
                saved.append((cb, "color", cb.color))
                cb.color = "black" if background == "white" else "white"
        if background == "white" and getattr(layer, "blending", None) == "additive" and i == 0:
            saved.append((layer, "blending", layer.blending))
            layer.blending = "translucent_no_depth"
    try:
        yield
    finally:
        for obj, attr, val in reversed(saved):
            with contextlib.suppress(Exception):
                setattr(obj, attr, val)


def screenshot(viewer, path=None, *, scale: float = 4.0, layers=(), background: str = "black",
               colorbar: bool = True, scale_bar: bool = True) -> np.ndarray:
    """A high-resolution canvas screenshot (``scale`` × the displayed size, 1–8) with colorbars on
    ``layers`` and the µm scale bar; written to ``path`` (PNG/JPEG/TIFF, atomically) if given."""
    if not 1.0 <= float(scale) <= 8.0:
        raise InputError(None, f"screenshot scale must be 1…8, got {scale}")
    with figure_style(viewer, layers, background=background, colorbar=colorbar, scale_bar=scale_bar):
        img = viewer.screenshot(canvas_only=True, scale=float(scale), flash=False)
    if path is not None:
        write_image(path, img)
    return img


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


# --- volumes -------------------------------------------------------------------------------
def _ngff_attrs(genes, scale_zyx, translate_zyx, name: str) -> dict:
    return {
        "multiscales": [{
            "version": "0.4",
            "name": name,
            "axes": [{"name": "c", "type": "channel"},
                     {"name": "z", "type": "space", "unit": "micrometer"},
                     {"name": "y", "type": "space", "unit": "micrometer"},
                     {"name": "x", "type": "space", "unit": "micrometer"}],
            "datasets": [{"path": "0", "coordinateTransformations": [
                {"type": "scale", "scale": [1.0, *(float(s) for s in scale_zyx)]},
                {"type": "translation", "translation": [0.0, *(float(t) for t in translate_zyx)]}]}],
        }],
        "omero": {"channels": [{"label": str(g), "active": True} for g in genes]},
        "napari_inrst": {"genes": [str(g) for g in genes], "outside_tissue": "NaN"},
    }


class VolumeWriter:
    """Write a (c, z, y, x) float32 volume slab by slab (``write(k0, values)`` with values
    (c, k1-k0, y, x)); ``close()`` commits atomically, ``abort()`` leaves nothing behind."""

    def __init__(self, path, shape_czyx, *, scale_zyx, translate_zyx=(0.0, 0.0, 0.0), genes=()):
        self.path = Path(path)
        self.fmt = volume_format(path)
        self.shape = tuple(int(s) for s in shape_czyx)
        self.scale, self.translate = tuple(map(float, scale_zyx)), tuple(map(float, translate_zyx))
        self.genes = list(genes) or [f"c{i}" for i in range(self.shape[0])]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.fmt == "zarr":
            import zarr

            self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent))
            root = zarr.open_group(str(self._tmp), mode="w", zarr_format=2)
            root.attrs.update(_ngff_attrs(self.genes, self.scale, self.translate, self.path.stem))
            c, z, y, x = self.shape
            self._arr = root.create_array("0", shape=self.shape, dtype="float32",
                                          chunks=(1, min(z, 32), min(y, 256), min(x, 256)),
                                          fill_value=float("nan"),
                                          chunk_key_encoding={"name": "v2", "separator": "/"})
        else:
            c, z, y, x = self.shape
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
            os.close(fd)
            self._tmp = Path(tmp)
            # planes as (z, c, y, x) memmap in a scratch .npy, then one streamed TIFF write
            self._scratch = self._tmp.with_suffix(".npy")
            self._arr = np.lib.format.open_memmap(self._scratch, mode="w+", dtype=np.float32, shape=(z, c, y, x))

    def write(self, k0: int, values: np.ndarray):
        values = np.asarray(values, dtype=np.float32)
        k1 = k0 + values.shape[1]
        if self.fmt == "zarr":
            self._arr[:, k0:k1] = values
        else:
            self._arr[k0:k1] = values.transpose(1, 0, 2, 3)

    def close(self):
        if self.fmt == "zarr":
            if self.path.exists():
                old = self.path.with_name(f".{self.path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(self.path, old)
                os.replace(self._tmp, self.path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(self._tmp, self.path)
            return self.path
        import tifffile

        self._arr.flush()
        z, c, y, x = self._arr.shape
        dz, dy, dx = self.scale
        try:
            def pages():
                for k in range(z):
                    for ch in range(c):
                        yield np.ascontiguousarray(self._arr[k, ch])

            tifffile.imwrite(self._tmp, pages(), shape=(z, c, y, x), dtype="float32", imagej=True,
                             resolution=(1.0 / dx, 1.0 / dy),
                             metadata={"axes": "ZCYX", "spacing": dz, "unit": "um",
                                       "Labels": [str(g) for g in self.genes] * z})
            os.replace(self._tmp, self.path)
        finally:
            del self._arr
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._scratch)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)
        return self.path

    def abort(self):
        if self.fmt == "zarr":
            shutil.rmtree(self._tmp, ignore_errors=True)
        else:
            self._arr = None
            for p in (self._scratch, self._tmp):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(p)


def save_volume(path, volume: np.ndarray, *, scale_zyx, translate_zyx=(0.0, 0.0, 0.0), genes=()):
    """Write a (z, y, x) or (c, z, y, x) volume with its physical voxel size (µm)."""
    v = np.asarray(volume, dtype=np.float32)
    if v.ndim == 3:
        v = v[None]
    if v.ndim != 4:
        raise InputError(path, f"volume must be 3D or 4D, got shape {v.shape}")
    w = VolumeWriter(path, v.shape, scale_zyx=scale_zyx, translate_zyx=translate_zyx, genes=genes)
    try:
        w.write(0, v)
        return w.close()
    except BaseException:
        w.abort()
        raise


def read_volume(path) -> tuple[np.ndarray, dict]:
    """Read back what :func:`save_volume` wrote: ((c, z, y, x) array, {scale_zyx, translate_zyx, genes})."""
    fmt = volume_format(path)
    if fmt == "zarr":
        import zarr

        root = zarr.open_group(str(path), mode="r")
        ms = root.attrs["multiscales"][0]
        tr = ms["datasets"][0]["coordinateTransformations"]
        return np.asarray(root["0"][:]), {"scale_zyx": tuple(tr[0]["scale"][1:]),
                                          "translate_zyx": tuple(tr[1]["translation"][1:]),
                                          "genes": root.attrs.get("napari_inrst", {}).get("genes", [])}
    import tifffile

    with tifffile.TiffFile(str(path)) as tf:
        data = tf.asarray()
        ij = tf.imagej_metadata or {}
        page = tf.pages[0]
        xres = page.tags["XResolution"].value
        yres = page.tags["YResolution"].value
    if data.ndim == 3:  # one channel: ZYX
        data = data[:, None]
    dx, dy = xres[1] / xres[0], yres[1] / yres[0]
    labels = ij.get("Labels", [])
    return data.transpose(1, 0, 2, 3), {"scale_zyx": (float(ij.get("spacing", 1.0)), dy, dx),
                                        "genes": list(labels[:data.shape[1]])}


# --- movies --------------------------------------------------------------------------------
def animation_available() -> bool:
    try:
        import napari_animation  # noqa: F401
    except ImportError:
        return False
    return True


MOVIE_MISSING = ("movies need the optional napari-animation plugin: pip install napari-animation "
                 "(then use the Movie button again)")


def movie(viewer, path, *, kind: str = "z", z_range=None, frames: int = 60, fps: int = 20,
          set_z=None, scale_factor: float = 1.0):
    """A movie through napari-animation: ``kind='z'`` sweeps the plane from ``z_range[0]`` to
    ``z_range[1]`` (``set_z(z)`` must update the plane synchronously, e.g.
    ``ViewWidget.set_z(z, sync=True)``); ``kind='rotate'`` turns the 3D view once around z.
    Raises RuntimeError with install advice when napari-animation is missing."""
    if not animation_available():
        raise RuntimeError(MOVIE_MISSING)
    from napari_animation import Animation

    anim = Animation(viewer)
    frames = max(2, int(frames))
    if kind == "z":
        if z_range is None or set_z is None:
            raise InputError(None, "a z sweep needs z_range and set_z")
        # one keyframe per frame: the plane is re-evaluated at each z before it is captured
        for i, z in enumerate(np.linspace(float(z_range[0]), float(z_range[1]), frames)):
            set_z(float(z))
            anim.capture_keyframe(steps=1)
    elif kind == "rotate":
        viewer.dims.ndisplay = 3
        cam = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
        a0 = tuple(cam.angles)
        for k in range(5):
            cam.angles = (a0[0], a0[1], a0[2] + 90.0 * k)
            anim.capture_keyframe(steps=max(1, frames // 4))
        cam.angles = a0
    else:
        raise InputError(None, f"movie kind must be 'z' or 'rotate', got '{kind}'")
    anim.animate(str(path), canvas_only=True, fps=int(fps), scale_factor=float(scale_factor))
    return path
