"""Band-limited evaluation: sample the field at its own finest scale, then resample exactly to the
requested grid with separable cubic (Keys, a = -1/2) interpolation.

A trained field resolves nothing finer than its finest encoding scale (the shortest Fourier
wavelength, or the finest hash-grid cell). Sampling it at ``detail / oversample`` (the viewer uses
:data:`OVERSAMPLE` = 4 samples per finest wavelength, twice the Nyquist rate; the CLI's
``--oversample K`` takes any K) and interpolating with a cubic kernel
reproduces the field at screen resolution within a small, measured error
(``benchmarks/bench_render.py`` reports it) while running the trunk on far fewer points when the
user zooms in. Resampling is linear, so it commutes with the linear gene decoder: the decode runs
on the coarse samples, and the (few) gene images are resampled — two small matrix products each.
"""

from __future__ import annotations

import math
import sys

import numpy as np

#: samples per finest field scale for band-limited sampling where no number is given: the View
#: widget's "Band-limited sampling" (on by default) and the benchmarks. At 4 the cubic resampling
#: error stays under 2 % (max) and 0.5 % (RMS) of a gene's range in tests/test_render.py
#: (benchmarks/bench_render.py reports it on trained fields) and falls as step^4 with a larger
#: value; the CLI evaluates every pixel unless ``--oversample K``.
OVERSAMPLE = 4.0


def field_detail_um(field) -> tuple[float, float] | None:
    """(xy, z) finest length in µm the field can represent; None when unknown (evaluate exactly).

    A field may declare ``detail_um = (xy, z)`` (or a method returning it); a trained
    :class:`~napari_inrst.field.model.FieldModel` asks its encoding (Fourier: the shortest
    wavelength; hash grid: the finest cell).
    """
    d = getattr(field, "detail_um", None)
    if d is not None:
        d = d() if callable(d) else d
        return (float(d[0]), float(d[1])) if d is not None else None
    return None


def cubic_weights(src0: float, src_step: float, n_src: int, dst0: float, dst_step: float, n_dst: int) -> np.ndarray:
    """(n_dst, n_src) float32 matrix of cubic interpolation weights from samples at
    ``src0 + i·src_step`` to points ``dst0 + j·dst_step`` (edge samples replicated)."""
    t = (dst0 + np.arange(n_dst) * dst_step - src0) / src_step
    i0 = np.floor(t).astype(np.int64)
    f = t - i0
    a = -0.5
    W = np.zeros((n_dst, n_src), dtype=np.float64)
    rows = np.arange(n_dst)
    for k in (-1, 0, 1, 2):
        x = np.abs(f - k)
        w = np.where(x <= 1, (a + 2) * x**3 - (a + 3) * x**2 + 1,
                     np.where(x < 2, a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a, 0.0))
        np.add.at(W, (rows, np.clip(i0 + k, 0, n_src - 1)), w)
    return W.astype(np.float32)


def coarse_axis(lo: float, hi: float, step: float, pad: int = 2) -> tuple[float, int]:
    """A lattice (origin on multiples of ``step``) covering [lo, hi] with ``pad`` extra samples
    each side (the cubic kernel's support): (origin, n)."""
    i0 = math.floor(lo / step) - pad
    i1 = math.ceil(hi / step) + pad
    return i0 * step, int(i1 - i0 + 1)


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float32 ``a @ b`` through torch (one thread, see plane.render_threads) when torch is already
    loaded: numpy's BLAS threads and torch's OpenMP threads oversubscribe a small CPU badly."""
    torch = sys.modules.get("torch")
    if torch is None:
        return a @ b
    from .threads import render_threads

    with render_threads():
        return (torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
                @ torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32))).numpy()


def resample2d(img: np.ndarray, Wy: np.ndarray, Wx: np.ndarray) -> np.ndarray:
    """(k, ny_c, nx_c) → (k, ny, nx): ``Wy @ img[c] @ Wx.T`` per channel."""
    img = np.asarray(img, dtype=np.float32)
    k, nyc, nxc = img.shape
    t = _mm(img.reshape(k * nyc, nxc), Wx.T).reshape(k, nyc, -1)  # k, yc, x
    t = _mm(Wy, t.transpose(1, 0, 2).reshape(nyc, -1))  # y, k*x
    return np.ascontiguousarray(t.reshape(Wy.shape[0], k, -1).transpose(1, 0, 2))


def resample3d(vol: np.ndarray, Wz, Wy, Wx) -> np.ndarray:
    """(k, nz_c, ny_c, nx_c) → (k, nz, ny, nx), one axis at a time (None: axis kept as is)."""
    out = np.asarray(vol, dtype=np.float32)
    for axis, W in ((3, Wx), (2, Wy), (1, Wz)):
        if W is not None:
            moved = np.moveaxis(out, axis, -1)
            shp = moved.shape
            res = _mm(moved.reshape(-1, shp[-1]), W.T).reshape(*shp[:-1], W.shape[0])
            out = np.moveaxis(res, -1, axis)
    return np.ascontiguousarray(out, dtype=np.float32)


def fill_nearest(vals: np.ndarray, valid: np.ndarray, reach: int = 2) -> np.ndarray:
    """Fill samples where ``~valid`` (spatial shape) within ``reach`` samples of valid ones with the
    mean of the valid samples around them (normalized box filter), the rest with 0, so the cubic
    kernel near the tissue edge never reads NaN; (k, *shape) in, same out."""
    if valid.all():
        return vals
    out = np.where(valid, vals, 0.0).astype(np.float32)
    if not valid.any():
        return out
    from scipy.ndimage import uniform_filter

    size = 2 * int(reach) + 1
    w = uniform_filter(valid.astype(np.float32), size=size, mode="nearest")
    near = (~valid) & (w > 1e-6)
    for c in range(out.shape[0]):
        s = uniform_filter(out[c], size=size, mode="nearest")
        out[c][near] = s[near] / w[near]
    return out
