"""Volumes on disk: OME-Zarr (NGFF 0.4, axes c/z/y/x in micrometer, multiscale pyramid) and ImageJ
TIFF (voxel size in µm), written slab by slab (:class:`VolumeWriter`, so volumes larger than memory
work) and read back (:func:`open_volume_levels` lazily for the napari reader, :func:`read_volume`).
Computing a field's volume into a writer is :func:`napari_inrst.render.volume.write_field_volume`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from ..errors import InputError
from .atomic import make_parents, remove_folders, replace_dir, temp_dir_beside, temp_file_beside, unregister_temp
from .atomic import write_error

ZARR_SUFFIXES = (".zarr", ".ome.zarr")
TIFF_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff")


def volume_format(path) -> str:
    """'zarr' or 'tiff' from the file name; InputError otherwise."""
    name = str(path).lower().rstrip("/")
    if name.endswith(ZARR_SUFFIXES):
        return "zarr"
    if name.endswith(TIFF_SUFFIXES):
        return "tiff"
    raise InputError(path, "volume output must end in .tif/.tiff or .zarr/.ome.zarr")


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


def volume_bytes(shape_czyx, fmt: str = "zarr") -> int:
    """Upper bound of the bytes a volume takes on disk, uncompressed (OME-Zarr: with its pyramid)."""
    c, z, y, x = (int(v) for v in shape_czyx)
    n = 4 * c * z * y * x
    return int(n * 4 / 3) if fmt == "zarr" else n



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
        raise write_error(path, exc) from None
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
