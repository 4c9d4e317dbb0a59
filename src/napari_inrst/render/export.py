"""Figures and files from rendered fields (no Qt import; napari objects are passed in).

* :func:`screenshot` — the canvas at ``scale`` × (2–8) with colorbars of the field layers and the
  scale bar in µm, on a white or black background; restores the viewer afterwards.
* :func:`save_volume` — a volume as OME-Zarr (NGFF 0.4, axes c/z/y/x in micrometer, multiscale
  pyramid) or ImageJ TIFF (voxel size in µm); :class:`VolumeWriter` / :func:`write_field_volume`
  stream slab by slab, so volumes larger than memory work; :func:`open_volume_levels` reads an
  OME-Zarr lazily (the napari reader).
* :func:`sweep_movie` / :func:`rotation_movie` — movies through the optional napari-animation
  plugin (.mp4, .gif or a folder of PNG frames).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.atomic import (atomic_path, make_parents, remove_folders, replace_dir, temp_dir_beside,
                         temp_file_beside, unregister_temp)
from ..io.atomic import check_free_space as _check_free_space
from ..io.atomic import write_error as _write_error_shared

ZARR_SUFFIXES = (".zarr", ".ome.zarr")
TIFF_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def viewer_camera(viewer):
    """The viewer's camera: ``viewer.scene.camera`` (napari ≥ 0.9; ``viewer.camera`` is deprecated
    there) or ``viewer.camera`` on older napari."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def volume_format(path) -> str:
    """'zarr' or 'tiff' from the file name; InputError otherwise."""
    name = str(path).lower().rstrip("/")
    if name.endswith(ZARR_SUFFIXES):
        return "zarr"
    if name.endswith(TIFF_SUFFIXES):
        return "tiff"
    raise InputError(path, "volume output must end in .tif/.tiff or .zarr/.ome.zarr")


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
#: NGFF version written (zarr v2 layout, "/" dimension separator, axes c/z/y/x in micrometer)
NGFF_VERSION = "0.4"
#: top-level attribute that marks an OME-Zarr written by napari-inrst (the napari reader looks for it)
INRST_ZARR_KEY = "napari_inrst"
#: pyramid levels are added until the longest axis has at most this many voxels (napari shows the
#: coarsest level of a multiscale image in 3D)
PYRAMID_COARSEST = 256
#: zarr chunk (z, y, x) of every level (per channel): ~2 MB, small enough for lazy 2D slicing
ZARR_CHUNK = (8, 256, 256)
#: default memory per slab while streaming a volume (values of one slab of z planes)
SLAB_BYTES = 256 * 2**20
_CHANNEL_COLORS = ["FFFFFF", "FF00FF", "00FF00", "00FFFF", "FFFF00", "FF0000", "0000FF"]


def pyramid_plan(shape_zyx, scale_zyx, coarsest: int = PYRAMID_COARSEST, max_levels: int = 10) -> list[tuple]:
    """Downsampling factors (fz, fy, fx), each 1 or 2, from each level to the next, until the
    longest axis is ≤ ``coarsest``. An axis is halved when its voxels are at most 1.5× the finest
    of the axes still longer than one voxel, so levels tend towards cubic voxels (a thin stack
    keeps its few z planes while x and y are halved)."""
    shape, scale, out = [int(n) for n in shape_zyx], [float(s) for s in scale_zyx], []
    while max(shape) > coarsest and len(out) < max_levels:
        smin = min(s for s, n in zip(scale, shape) if n > 1)
        f = tuple(2 if (n > 1 and s <= 1.5 * smin) else 1 for s, n in zip(scale, shape))
        out.append(f)
        shape = [-(-n // k) for n, k in zip(shape, f)]
        scale = [s * k for s, k in zip(scale, f)]
    return out


def _level_geometry(shape_zyx, scale_zyx, translate_zyx, plan):
    """[(shape, scale, translate)] of every level: voxel centres of level l sit at the centre of
    the block of base voxels they average."""
    shape, out = tuple(int(n) for n in shape_zyx), []
    cum = np.ones(3)
    out.append((shape, tuple(map(float, scale_zyx)), tuple(map(float, translate_zyx))))
    for f in plan:
        cum = cum * np.asarray(f)
        shape = tuple(-(-n // k) for n, k in zip(shape, f))
        sc = tuple(float(s * c) for s, c in zip(scale_zyx, cum))
        tr = tuple(float(t + (c - 1) * s / 2) for t, s, c in zip(translate_zyx, scale_zyx, cum))
        out.append((shape, sc, tr))
    return out


def block_nanmean(a: np.ndarray, f) -> np.ndarray:
    """(c, z, y, x) → mean over blocks of ``f = (fz, fy, fx)`` voxels ignoring NaN (NaN where a
    block has no finite value); edges padded with NaN."""
    c, z, y, x = a.shape
    fz, fy, fx = (int(v) for v in f)
    pads = ((0, 0), (0, (-z) % fz), (0, (-y) % fy), (0, (-x) % fx))
    if any(p[1] for p in pads):
        a = np.pad(a, pads, constant_values=np.nan)
    b = a.reshape(c, a.shape[1] // fz, fz, a.shape[2] // fy, fy, a.shape[3] // fx, fx)
    ok = np.isfinite(b)
    total = np.where(ok, b, np.float32(0)).sum(axis=(2, 4, 6), dtype=np.float32)
    count = ok.sum(axis=(2, 4, 6))
    out = np.full(total.shape, np.nan, dtype=np.float32)
    np.divide(total, count, out=out, where=count > 0)
    return out


def _ngff_attrs(genes, levels, name: str, contrast, value_range, plan) -> dict:
    chans = []
    for i, g in enumerate(genes):
        lo, hi = contrast[i]
        vmin, vmax = value_range[i]
        chans.append({"label": str(g), "active": True, "color": _CHANNEL_COLORS[i % len(_CHANNEL_COLORS)],
                      "coefficient": 1.0, "family": "linear", "inverted": False,
                      "window": {"min": vmin, "max": vmax, "start": lo, "end": hi}})
    return {
        "multiscales": [{
            "version": NGFF_VERSION,
            "name": name,
            "axes": [{"name": "c", "type": "channel"},
                     {"name": "z", "type": "space", "unit": "micrometer"},
                     {"name": "y", "type": "space", "unit": "micrometer"},
                     {"name": "x", "type": "space", "unit": "micrometer"}],
            "datasets": [{"path": str(i), "coordinateTransformations": [
                {"type": "scale", "scale": [1.0, *sc]},
                {"type": "translation", "translation": [0.0, *tr]}]} for i, (_, sc, tr) in enumerate(levels)],
            "type": "mean",
            "metadata": {"description": "each level averages blocks of the previous one (NaN ignored)",
                         "factors_zyx": [list(f) for f in plan]},
        }],
        "omero": {"version": NGFF_VERSION, "name": name, "channels": chans,
                  "rdefs": {"model": "greyscale" if len(genes) == 1 else "color"}},
        INRST_ZARR_KEY: {"format": 1, "genes": [str(g) for g in genes], "outside_tissue": "NaN",
                         "contrast_limits": [list(c) for c in contrast], "unit": "micrometer"},
    }


def _zarr_major() -> int:
    import zarr

    return int(str(zarr.__version__).split(".")[0])


def _zarr_new_group(path):
    """A new zarr v2-format group (NGFF 0.4) under zarr 2.16+ or 3.x."""
    import zarr

    if _zarr_major() >= 3:
        return zarr.open_group(str(path), mode="w", zarr_format=2)
    return zarr.open_group(str(path), mode="w")


def _zarr_new_array(group, name: str, shape, chunks):
    """float32 array, NaN fill, "/" chunk keys (required by NGFF 0.4), under zarr 2.16+ or 3.x."""
    if hasattr(group, "create_array"):  # zarr >= 3
        return group.create_array(name, shape=tuple(shape), chunks=tuple(chunks), dtype="float32",
                                  fill_value=float("nan"), chunk_key_encoding={"name": "v2", "separator": "/"})
    return group.create_dataset(name, shape=tuple(shape), chunks=tuple(chunks), dtype="float32",
                                fill_value=float("nan"), dimension_separator="/")


def _replace_dir(tmp: Path, path: Path):
    """Move the finished directory ``tmp`` to ``path`` (replacing a previous one) atomically:
    :func:`napari_inrst.io.atomic.replace_dir`."""
    replace_dir(tmp, path)


def _chunks(shape_zyx, depth: int = ZARR_CHUNK[0]):
    """Per-channel chunks (1, z, y, x); ``depth`` caps the z extent (to match the slabs written)."""
    cz = max(1, min(int(depth), ZARR_CHUNK[0]))
    return (1, *(max(1, min(n, c)) for n, c in zip(shape_zyx, (cz, *ZARR_CHUNK[1:]))))


class VolumeWriter:
    """Write a (c, z, y, x) float32 volume slab by slab: ``write(k0, values)`` with values
    (c, k1-k0, y, x). ``close()`` completes and commits atomically; ``abort()`` leaves nothing.

    Nothing of the whole volume is held in memory:

    * OME-Zarr (NGFF 0.4): slabs go straight into chunked zarr arrays in a temporary directory
      beside ``path``; ``close()`` adds the multiscale pyramid (:func:`pyramid_plan`), each level
      computed from the previous one slab by slab within ``slab_bytes``, then writes the metadata
      (axes and scales in µm, omero channels, the napari-inrst marker) and renames the directory.
    * TIFF (ImageJ hyperstack, ZCYX, µm): planes are appended to a temporary file as they come
      (slabs must arrive in z order); uncompressed, no pyramid. Beyond 4 GB tifffile writes a
      "truncated" ImageJ file (one IFD + contiguous data), which ImageJ and tifffile read.

    ``contrast``: per-channel display limits stored in the metadata (default: the value range).
    """

    def __init__(self, path, shape_czyx, *, scale_zyx, translate_zyx=(0.0, 0.0, 0.0), genes=(),
                 contrast=None, pyramid: bool = True, coarsest: int = PYRAMID_COARSEST,
                 slab_bytes: float = SLAB_BYTES):
        self.path = Path(path)
        self.fmt = volume_format(path)
        self.shape = tuple(int(s) for s in shape_czyx)
        if len(self.shape) != 4 or min(self.shape) < 1:
            raise InputError(path, f"volume shape must be (c, z, y, x) ≥ 1, got {self.shape}")
        self.scale, self.translate = tuple(map(float, scale_zyx)), tuple(map(float, translate_zyx))
        self.genes = [str(g) for g in genes] or [f"c{i}" for i in range(self.shape[0])]
        self.contrast = [tuple(map(float, c)) for c in contrast] if contrast is not None else None
        self.slab_bytes = float(slab_bytes)
        c, z, y, x = self.shape
        self._lo = np.full(c, np.inf)
        self._hi = np.full(c, -np.inf)
        self._planes = np.zeros(z, dtype=bool)
        self._tmp = None
        self.plan = pyramid_plan((z, y, x), self.scale, coarsest) if (pyramid and self.fmt == "zarr") else []
        self._created = make_parents(self.path)  # removed again by abort()
        if self.fmt == "zarr":
            # chunks no deeper than the slabs that fit slab_bytes: each slab fills whole chunks
            # (no read-modify-write of partly written chunks)
            depth = max(1, int(self.slab_bytes // (4.0 * c * y * x)))
            chunks = _chunks((z, y, x), depth)
            try:
                self._tmp = temp_dir_beside(self.path)
                self._root = _zarr_new_group(self._tmp)
                self._arr = _zarr_new_array(self._root, "0", self.shape, chunks)
            except BaseException:
                self.abort()
                raise
            self.chunk_z = chunks[1]
        else:
            import tifffile

            try:
                self._tmp = temp_file_beside(self.path)
                self._tif = tifffile.TiffWriter(self._tmp, imagej=True)
            except BaseException:
                self.abort()
                raise
            self.chunk_z = 1

    def write(self, k0: int, values: np.ndarray):
        values = np.asarray(values, dtype=np.float32)
        c, z, y, x = self.shape
        k0 = int(k0)
        if values.ndim != 4 or values.shape[0] != c or values.shape[2:] != (y, x) or not 0 <= k0 <= z - values.shape[1]:
            raise ValueError(f"slab of shape {values.shape} at z {k0} does not fit a volume of {self.shape}")
        k1 = k0 + values.shape[1]
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slabs
            self._lo = np.fmin(self._lo, np.nanmin(values, axis=(1, 2, 3)))
            self._hi = np.fmax(self._hi, np.nanmax(values, axis=(1, 2, 3)))
        if self.fmt == "zarr":
            self._arr[:, k0:k1] = values
        else:
            if not self._planes[:k0].all() or self._planes[k0:].any():
                raise ValueError("TIFF volumes are written in z order, one slab after the other")
            dz, dy, dx = self.scale
            meta = {"spacing": dz, "unit": "um", "Labels": self.genes * z}
            for j in range(values.shape[1]):  # (c, y, x) pages: an ImageJ ZCYX (ZYX) hyperstack
                self._tif.write(values[:, j], contiguous=True,
                                resolution=(1.0 / dx, 1.0 / dy), metadata=meta)
        self._planes[k0:k1] = True

    def _ranges(self):
        vr, lims = [], []
        for i in range(self.shape[0]):
            lo, hi = float(self._lo[i]), float(self._hi[i])
            if not (np.isfinite(lo) and np.isfinite(hi)):
                lo, hi = 0.0, 1.0
            vr.append((lo, hi))
            lims.append((lo, hi if hi > lo else lo + 1.0))
        return vr, (self.contrast or lims)

    def _build_pyramid(self):
        c = self.shape[0]
        geo = _level_geometry(self.shape[1:], self.scale, self.translate, self.plan)
        parent = self._arr
        for lvl, f in enumerate(self.plan, start=1):
            shape = geo[lvl][0]
            pz, py, px = parent.shape[1:]
            fz = f[0]
            # parent slab + the temporaries of block_nanmean ≈ 4× the parent slab
            n = max(1, int(self.slab_bytes // (4 * 4.0 * c * fz * py * px)))
            child = _zarr_new_array(self._root, str(lvl), (c, *shape), _chunks(shape, n))
            cz = child.chunks[1]
            n -= n % cz
            for k0 in range(0, shape[0], n):
                k1 = min(shape[0], k0 + n)
                block = np.asarray(parent[:, k0 * fz:min(k1 * fz, pz)], dtype=np.float32)
                child[:, k0:k1] = block_nanmean(block, f)
                del block
            parent = child
        return geo

    def close(self):
        if not self._planes.all():
            missing = int((~self._planes).sum())
            self.abort()
            raise ValueError(f"{self.path}: {missing} of {self.shape[1]} z planes were never written")
        vr, lims = self._ranges()
        try:
            if self.fmt == "zarr":
                geo = self._build_pyramid()
                self._root.attrs.update(_ngff_attrs(self.genes, geo, self.path.name.split(".")[0], lims, vr,
                                                    self.plan))
                _replace_dir(self._tmp, self.path)
            else:
                self._tif.close()
                os.replace(self._tmp, self.path)
                unregister_temp(self._tmp)
        except BaseException:
            self.abort()
            raise
        self._tmp = None
        self._created = []
        return self.path

    def abort(self):
        """Remove everything written so far (safe to call more than once)."""
        if self.fmt == "tiff" and getattr(self, "_tif", None) is not None:
            with contextlib.suppress(Exception):
                self._tif.close()
            self._tif = None
        if self._tmp is not None:
            if self._tmp.is_dir():
                shutil.rmtree(self._tmp, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._tmp)
            unregister_temp(self._tmp)
            self._tmp = None
        remove_folders(getattr(self, "_created", []))  # the folders made for this volume
        self._created = []

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


def _write_error(path, exc: OSError) -> InputError:
    if isinstance(exc, InputError):
        return exc
    return _write_error_shared(path, exc)


def volume_bytes(shape_czyx, fmt: str = "zarr") -> int:
    """Upper bound of the bytes a volume takes on disk, uncompressed (OME-Zarr: with its pyramid)."""
    c, z, y, x = (int(v) for v in shape_czyx)
    n = 4 * c * z * y * x
    return int(n * 4 / 3) if fmt == "zarr" else n


def check_free_space(path, nbytes: int):
    """InputError naming ``path`` when its filesystem has less than ``nbytes`` free."""
    _check_free_space(path, nbytes)


def write_field_volume(path, field, grid, genes, *, names=None, masked: bool = True, threshold: float = 0.5,
                       oversample: float | None = None, slab_bytes: float = SLAB_BYTES, contrast=None,
                       pyramid: bool = True, progress=None) -> dict:
    """Evaluate ``field`` on ``grid`` for gene indices ``genes`` and stream it to ``path``
    (OME-Zarr with pyramid, or TIFF) slab by slab: memory is bounded by ``slab_bytes`` whatever the
    volume's size (see :func:`~napari_inrst.render.volume.stream_volume`). ``progress(k1, nz)`` is
    called after each slab. Returns ``{'mode', 'slab_planes'}``. Nothing is left at ``path`` on
    error; OS errors (disk full, unwritable folder) become an InputError naming ``path``."""
    from .volume import stream_volume

    genes = list(genes)
    names = [str(g) for g in (names or [field.genes[i] for i in genes])]
    info: dict = {}
    try:
        w = VolumeWriter(path, (len(genes), *grid.shape), scale_zyx=grid.scale, translate_zyx=grid.translate,
                         genes=names, contrast=contrast, pyramid=pyramid, slab_bytes=slab_bytes)
    except OSError as exc:
        raise _write_error(path, exc) from None
    try:
        for k0, k1, vals in stream_volume(field, grid, genes, masked=masked, threshold=threshold,
                                          slab_bytes=slab_bytes, planes_multiple=w.chunk_z,
                                          oversample=oversample, info=info):
            w.write(k0, vals)
            del vals  # the next slab is computed without this one alive
            if progress is not None:
                progress(k1, grid.nz)
        w.close()
    except OSError as exc:
        w.abort()
        raise _write_error(path, exc) from None
    except BaseException:
        w.abort()
        raise
    return info


def save_volume(path, volume: np.ndarray, *, scale_zyx, translate_zyx=(0.0, 0.0, 0.0), genes=(), contrast=None):
    """Write a (z, y, x) or (c, z, y, x) volume with its physical voxel size (µm); OME-Zarr gets
    its multiscale pyramid."""
    v = np.asarray(volume, dtype=np.float32)
    if v.ndim == 3:
        v = v[None]
    if v.ndim != 4:
        raise InputError(path, f"volume must be 3D or 4D, got shape {v.shape}")
    try:
        with VolumeWriter(path, v.shape, scale_zyx=scale_zyx, translate_zyx=translate_zyx, genes=genes,
                          contrast=contrast) as w:
            w.write(0, v)
    except OSError as exc:
        raise _write_error(path, exc) from None
    return Path(path)


def is_inrst_zarr(path) -> bool:
    """True for a directory holding an OME-Zarr written by napari-inrst (reads only its .zattrs)."""
    p = Path(os.fspath(path))
    try:
        attrs = json.loads((p / ".zattrs").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(attrs, dict) and INRST_ZARR_KEY in attrs and "multiscales" in attrs


def open_volume_levels(path):
    """Lazy levels of an OME-Zarr written here: ([dask arrays (c, z, y, x), finest first],
    {scale_zyx, translate_zyx, genes, contrast_limits, levels: [(scale, translate)]}). Nothing is
    read but the metadata."""
    import dask.array as da
    import zarr

    if not is_inrst_zarr(path):
        raise InputError(path, "not an OME-Zarr volume written by napari-inrst")
    root = zarr.open_group(str(path), mode="r")
    attrs = dict(root.attrs)
    ms = attrs["multiscales"][0]
    levels, geo = [], []
    for ds in ms["datasets"]:
        tr = {t["type"]: t for t in ds["coordinateTransformations"]}
        levels.append(da.from_zarr(root[ds["path"]]))
        geo.append((tuple(tr["scale"]["scale"][1:]),
                    tuple(tr.get("translation", {"translation": [0.0] * 4})["translation"][1:])))
    meta = attrs[INRST_ZARR_KEY]
    return levels, {"scale_zyx": geo[0][0], "translate_zyx": geo[0][1], "levels": geo,
                    "genes": list(meta.get("genes", [])),
                    "contrast_limits": [tuple(c) for c in meta.get("contrast_limits", [])]}


def read_volume(path, level: int = 0) -> tuple[np.ndarray, dict]:
    """Read back a volume file into memory: ((c, z, y, x) array, {scale_zyx, translate_zyx, genes}).
    OME-Zarr: ``level`` of the pyramid (0 = full resolution)."""
    fmt = volume_format(path)
    if fmt == "zarr":
        import zarr

        root = zarr.open_group(str(path), mode="r")
        ms = root.attrs["multiscales"][0]
        ds = ms["datasets"][level]
        tr = {t["type"]: t for t in ds["coordinateTransformations"]}
        return np.asarray(root[ds["path"]][:]), {
            "scale_zyx": tuple(tr["scale"]["scale"][1:]),
            "translate_zyx": tuple(tr["translation"]["translation"][1:]),
            "genes": root.attrs.get(INRST_ZARR_KEY, {}).get("genes", []),
            "n_levels": len(ms["datasets"])}
    import tifffile

    with tifffile.TiffFile(str(path)) as tf:
        data = tf.asarray()
        ij = tf.imagej_metadata or {}
        page = tf.pages[0]
        xres = page.tags["XResolution"].value
        yres = page.tags["YResolution"].value
    if data.ndim == 3:  # one channel: ZYX
        data = data[:, None]
    elif data.ndim == 2:  # one plane, one channel
        data = data[None, None]
    dx, dy = xres[1] / xres[0], yres[1] / yres[0]
    labels = ij.get("Labels", [])
    return data.transpose(1, 0, 2, 3), {"scale_zyx": (float(ij.get("spacing", 1.0)), dy, dx),
                                        "genes": list(labels[:data.shape[1]])}


# --- movies --------------------------------------------------------------------------------
# Movies go through the napari-animation plugin (optional: the ``export`` extra): keyframes of the
# viewer state, interpolated and captured frame by frame from the canvas. napari-animation drives
# the canvas, so frames are captured on the main (GUI) thread; the viewer does not respond
# meanwhile. Formats: .mp4 (H.264 through imageio-ffmpeg, which napari-animation installs with its
# own ffmpeg binary), .gif (Pillow; identical consecutive frames are merged into one longer frame),
# or a path without suffix: a folder of PNG frames ``<name>/<name>_000000.png`` (no encoder needed).
MOVIE_MISSING = ("movies need the optional napari-animation plugin: pip install napari-animation "
                 "(then use the Movie button again)")


def animation_available() -> bool:
    try:
        import napari_animation  # noqa: F401
    except ImportError:
        return False
    return True


def _animation_class():
    try:
        from napari_animation import Animation
    except ImportError:
        raise RuntimeError(MOVIE_MISSING) from None
    return Animation


def movie_format(path) -> str:
    """'mp4', 'gif' or 'frames' (no suffix: a folder of PNG frames); InputError otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix == "":
        return "frames"
    if suffix in (".mp4", ".gif"):
        return suffix[1:]
    raise InputError(path, "movie output must end in .mp4 or .gif, or have no suffix (a folder of PNG frames)")


def _animate(anim, path, fps: int) -> Path:
    """``anim.animate`` into a temporary name beside ``path``, then renamed (nothing half-written)."""
    path = Path(path)
    fmt = movie_format(path)
    created = make_parents(path)
    tmpdir = temp_dir_beside(path)
    ok = False
    try:
        if fmt == "frames":
            # napari-animation writes <parent>/<stem>/<stem>_000000.png for a name without suffix
            anim.animate(str(tmpdir / path.name), fps=int(fps), canvas_only=True)
            made = tmpdir / path.name
            if not any(made.glob("*.png")):
                raise RuntimeError(f"{path}: napari-animation wrote no frames")
            _replace_dir(made, path)
        else:
            target = tmpdir / f"movie.{fmt}"
            anim.animate(str(target), fps=int(fps), canvas_only=True)
            if not target.is_file():  # napari-animation fell back to PNG frames: no encoder
                raise RuntimeError(f"{path}: no {fmt} writer available (imageio-ffmpeg missing?); "
                                   "save a folder of PNG frames instead (a name without suffix)")
            os.replace(target, path)
        ok = True
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
        unregister_temp(tmpdir)
        if not ok:
            remove_folders(created)
    return path


@contextlib.contextmanager
def _connected(emitter, callback):
    if callback is None:
        yield
        return
    emitter.connect(callback)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            emitter.disconnect(callback)


def sweep_movie(viewer, path, start: dict, stop: dict, *, frames: int = 48, fps: int = 12, progress=None) -> Path:
    """A movie sweeping the viewer's dims linearly from ``start`` to ``stop`` (``{axis: world
    coordinate}``) in ``frames`` frames: two napari-animation keyframes, the dims point
    interpolated between them. ``progress(i, frames)`` is called as frames are captured. The dims
    point is restored afterwards."""
    Animation = _animation_class()
    movie_format(path)
    frames = int(frames)
    if frames < 2:
        raise InputError(path, f"a movie needs at least 2 frames, got {frames}")
    saved = tuple(viewer.dims.point)
    anim = Animation(viewer)
    axis = next(iter(start))
    a0, a1 = float(start[axis]), float(stop[axis])

    def on_point(*_):
        if progress is not None and a1 != a0:
            f = (float(viewer.dims.point[axis]) - a0) / (a1 - a0)
            progress(int(round(min(max(f, 0.0), 1.0) * (frames - 1))) + 1, frames)

    try:
        for ax, v in start.items():
            viewer.dims.set_point(int(ax), float(v))
        anim.capture_keyframe(steps=1)
        for ax, v in stop.items():
            viewer.dims.set_point(int(ax), float(v))
        anim.capture_keyframe(steps=frames - 1)
        with _connected(viewer.dims.events.point, on_point):
            return _animate(anim, path, fps)
    finally:
        for ax, v in enumerate(saved[:viewer.dims.ndim]):
            with contextlib.suppress(Exception):
                viewer.dims.set_point(ax, v)


def turntable_direction(azimuth_deg: float, elevation_deg: float):
    """View direction (z, y, x) of a camera at ``elevation`` above the x-y plane and ``azimuth``
    around the z axis (the stacking axis), looking at the volume's centre."""
    a, e = np.deg2rad(azimuth_deg), np.deg2rad(elevation_deg)
    return (-float(np.sin(e)), -float(np.cos(e) * np.sin(a)), -float(np.cos(e) * np.cos(a)))


def rotation_movie(viewer, path, *, frames: int = 72, fps: int = 24, elevation: float = 30.0,
                   progress=None) -> Path:
    """A turntable movie of the 3D view: one turn around the z (stacking) axis, seen from
    ``elevation`` degrees above the sections, z up; frame i at azimuth 360·i/frames (so the movie
    loops). Keyframes about 45° apart, or one per frame for short movies (napari-animation
    interpolates camera angles along the shortest rotation between keyframes). The camera is
    restored afterwards."""
    Animation = _animation_class()
    movie_format(path)
    frames = int(frames)
    if frames < 2:
        raise InputError(path, f"a movie needs at least 2 frames, got {frames}")
    if viewer.dims.ndisplay != 3:
        raise InputError(path, "a rotation movie needs the 3D view (show the 3D volume first)")
    cam = viewer_camera(viewer)
    saved = (tuple(cam.angles), cam.zoom, tuple(cam.center))
    segments = frames - 1 if frames <= 9 else max(8, int(np.ceil((frames - 1) / 9)))
    bounds = np.round(np.linspace(0, frames - 1, segments + 1)).astype(int)
    anim = Animation(viewer)
    count = [0]

    def on_angles(*_):
        count[0] += 1
        if progress is not None:
            progress(min(count[0], frames), frames)

    try:
        for j, b in enumerate(bounds):
            cam.set_view_direction(turntable_direction(360.0 * b / frames, elevation), up_direction=(1.0, 0.0, 0.0))
            anim.capture_keyframe(steps=max(1, int(b - bounds[j - 1])) if j else 1)
        with _connected(cam.events.angles, on_angles):
            return _animate(anim, path, fps)
    finally:
        cam.angles, cam.zoom, cam.center = saved
