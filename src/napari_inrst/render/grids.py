"""Sampling grids in µm (no Qt, no torch): a plane for a field of view at a pixel size, a volume
within a memory budget.

Grids describe pixel/voxel *centres*: index ``i`` along an axis sits at ``origin + i * step``,
which is exactly napari's ``translate + i * scale``, so a rendered array drops into an Image
layer with ``scale=grid.scale`` and ``translate=grid.translate`` (world axes (z, y, x) in µm).
Field points are (x, y, z), as :class:`~napari_inrst.field.api.ExpressionField` expects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

#: per-axis resolution range offered for volumes held in memory (the viewer)
VOLUME_MIN, VOLUME_MAX = 64, 512
#: largest axis of a volume streamed to disk slab by slab (``napari-inrst render --volume``)
VOLUME_MAX_OUT_OF_CORE = 4096
#: largest plane side evaluated (a 4K screen at ×1)
PLANE_MAX = 4096


def point_dtype(coords, step: float):
    """float32 for grid points, unless float32 cannot resolve ``step`` (a tenth of it) at these
    coordinates (a field far from the origin): then float64, which the field centres before its
    own float32."""
    big = float(np.max(np.abs(np.asarray(coords, dtype=np.float64))))
    return np.float64 if np.spacing(np.float32(big)) > 0.1 * float(step) else np.float32


@dataclass(frozen=True)
class PlaneGrid:
    """An ``ny × nx`` grid of pixel centres at height ``z``: pixel (i, j) is at
    ``(x0 + j·dx, y0 + i·dy, z)`` µm."""

    z: float
    y0: float
    x0: float
    dy: float
    dx: float
    ny: int
    nx: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.ny, self.nx)

    @property
    def scale(self) -> tuple[float, float]:
        return (self.dy, self.dx)

    @property
    def translate(self) -> tuple[float, float]:
        return (self.y0, self.x0)

    @property
    def n(self) -> int:
        return self.ny * self.nx

    def extent(self) -> tuple[float, float, float, float]:
        """(xmin, xmax, ymin, ymax) covered by the pixels (edges, not centres)."""
        return (self.x0 - self.dx / 2, self.x0 + (self.nx - 0.5) * self.dx,
                self.y0 - self.dy / 2, self.y0 + (self.ny - 0.5) * self.dy)

    def points(self, rows: slice | None = None) -> np.ndarray:
        """(n, 3) float32 points (x, y, z), row-major (y rows, x columns); ``rows`` selects rows."""
        r = np.arange(self.ny)[rows] if rows is not None else np.arange(self.ny)
        dt = point_dtype((self.x0, self.x0 + self.nx * self.dx, self.y0, self.y0 + self.ny * self.dy, self.z),
                         min(self.dx, self.dy))
        ys = (self.y0 + r * self.dy).astype(dt)
        xs = (self.x0 + np.arange(self.nx) * self.dx).astype(dt)
        out = np.empty((len(ys), self.nx, 3), dtype=dt)
        out[..., 0] = xs[None, :]
        out[..., 1] = ys[:, None]
        out[..., 2] = self.z
        return out.reshape(-1, 3)

    def key(self) -> tuple:
        """Hashable identity (rounded to 1e-4 µm) for caches."""
        return ("plane", round(self.z, 4), round(self.y0, 4), round(self.x0, 4), round(self.dy, 6),
                round(self.dx, 6), self.ny, self.nx)

    def coarsened(self, factor: int) -> "PlaneGrid":
        """The same field of view sampled ``factor`` times more coarsely."""
        if factor <= 1:
            return self
        ny, nx = max(1, math.ceil(self.ny / factor)), max(1, math.ceil(self.nx / factor))
        xmin, xmax, ymin, ymax = self.extent()
        return plane_from_extent(self.z, (xmin, xmax, ymin, ymax), (ny, nx))


def plane_from_extent(z: float, extent, shape) -> PlaneGrid:
    """Grid of ``shape = (ny, nx)`` pixels covering ``extent = (xmin, xmax, ymin, ymax)`` µm."""
    xmin, xmax, ymin, ymax = (float(v) for v in extent)
    ny, nx = (int(v) for v in shape)
    if ny < 1 or nx < 1 or ny > PLANE_MAX or nx > PLANE_MAX:
        raise InputError(None, f"plane shape must be 1…{PLANE_MAX} pixels per side, got {ny}×{nx}")
    if not math.isfinite(float(z)):
        raise InputError(None, f"the plane's z must be a finite number of µm, got {float(z):g}")
    if not (xmax > xmin and ymax > ymin) or not all(map(math.isfinite, (xmin, xmax, ymin, ymax))):
        shown = ", ".join(f"{v:g}" for v in (xmin, xmax, ymin, ymax))
        raise InputError(None, f"empty or invalid extent ({shown}) (need finite xmin < xmax, ymin < ymax)")
    dx, dy = (xmax - xmin) / nx, (ymax - ymin) / ny
    return PlaneGrid(float(z), ymin + dy / 2, xmin + dx / 2, dy, dx, ny, nx)


def plane_shape_for(extent, longest: int) -> tuple[int, int]:
    """(ny, nx) with ``longest`` pixels on the longer side and square pixels."""
    xmin, xmax, ymin, ymax = extent
    w, h = xmax - xmin, ymax - ymin
    if w >= h:
        return max(1, round(longest * h / w)), int(longest)
    return int(longest), max(1, round(longest * w / h))


def plane_for_view(z: float, center_yx, zoom: float, canvas_hw, bounds=None, *, margin: float = 0.1,
                   max_side: int = 2048, oversample: float = 1.0, quantize: bool = True,
                   block: int = 32, frame=None) -> PlaneGrid | None:
    """The grid napari needs to fill the canvas at screen resolution.

    ``center_yx`` (µm) and ``zoom`` (screen pixels per µm) come from the 2D camera, ``canvas_hw``
    from the canvas. The visible rectangle is clipped to the field's x/y ``bounds`` (``(lo, hi)``
    of (x, y, z), enlarged by ``margin`` of their size) so nothing is evaluated far outside the
    data; the pixel size is ``1 / (zoom · oversample)`` µm — finer as the user zooms in — and is
    only coarsened when the clipped view would exceed ``max_side`` pixels. With ``quantize`` the
    pixel size is rounded down to a 2^(k/4) µm ladder and the rectangle is snapped outwards to
    blocks of ``block`` pixels, so small zooms, pans and canvas resizes reuse the same grid. None
    if nothing of the data is visible.

    ``frame`` = ``(xmin, xmax, ymin, ymax, step)`` (µm) keeps the grid's pixel centres inside that
    rectangle and its pixels no finer than ``step``: with the extent and finest scale of the
    viewer's other layers (:func:`~napari_inrst.viewer.field_layers.layers_frame`) the plane
    never changes napari's dims range, which would move the dims point and re-slice every layer.
    """
    cy, cx = (float(v) for v in center_yx)
    h, w = (float(v) for v in canvas_hw)
    zoom = float(zoom)
    if not (zoom > 0 and h > 0 and w > 0):
        return None
    half_y, half_x = h / 2 / zoom, w / 2 / zoom
    xmin, xmax, ymin, ymax = cx - half_x, cx + half_x, cy - half_y, cy + half_y
    if bounds is not None:
        lo, hi = (np.asarray(b, dtype=float) for b in bounds)
        pad = margin * (hi[:2] - lo[:2])
        xmin, xmax = max(xmin, lo[0] - pad[0]), min(xmax, hi[0] + pad[0])
        ymin, ymax = max(ymin, lo[1] - pad[1]), min(ymax, hi[1] + pad[1])
        if xmax <= xmin or ymax <= ymin:
            return None
    if frame is not None:
        xmin, xmax = max(xmin, frame[0]), min(xmax, frame[1])
        ymin, ymax = max(ymin, frame[2]), min(ymax, frame[3])
        if xmax <= xmin or ymax <= ymin:
            return None
    step = 1.0 / (zoom * max(oversample, 1e-6))
    if quantize:  # pixel sizes on a 2^(k/4) ladder (never coarser than the screen): small zooms reuse
        step = 2.0 ** (math.floor(4 * math.log2(step)) / 4)
    if frame is not None and step < frame[4]:
        step = float(frame[4])
    nx, ny = max(1, math.ceil((xmax - xmin) / step)), max(1, math.ceil((ymax - ymin) / step))
    if max(nx, ny) > max_side:
        step *= max(nx, ny) / max_side
    # snap the rectangle outwards to a lattice of `block` pixels, so small pans and canvas
    # resizes give the same grid (and hit the latent cache)
    b = step * max(int(block), 1)
    x0, y0 = math.floor(xmin / b) * b, math.floor(ymin / b) * b
    nx = max(1, math.ceil((xmax - x0) / b) * max(int(block), 1))
    ny = max(1, math.ceil((ymax - y0) / b) * max(int(block), 1))
    y0, x0 = y0 + step / 2, x0 + step / 2  # pixel centres
    if frame is not None:  # centres inside the frame (napari's extent of an image is its centres)
        (x0, nx), (y0, ny) = _inside(x0, nx, step, frame[0], frame[1]), _inside(y0, ny, step, frame[2], frame[3])
        if nx < 1 or ny < 1:
            return None
    return PlaneGrid(float(z), y0, x0, step, step, int(ny), int(nx))


def _inside(c0: float, n: int, step: float, lo: float, hi: float) -> tuple[float, int]:
    """First centre and count of ``n`` pixel centres from ``c0`` every ``step``, cropped to [lo, hi]."""
    eps = 1e-9 * max(abs(lo), abs(hi), 1.0)
    if c0 < lo + eps:
        k = math.ceil((lo + eps - c0) / step)
        c0, n = c0 + k * step, n - k
    last = math.floor((hi - eps - c0) / step)
    return c0, min(n, last + 1)


@dataclass(frozen=True)
class VolumeGrid:
    """An ``nz × ny × nx`` grid of voxel centres; voxel (k, i, j) is at
    ``(x0 + j·dx, y0 + i·dy, z0 + k·dz)`` µm."""

    z0: float
    y0: float
    x0: float
    dz: float
    dy: float
    dx: float
    nz: int
    ny: int
    nx: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.nz, self.ny, self.nx)

    @property
    def scale(self) -> tuple[float, float, float]:
        return (self.dz, self.dy, self.dx)

    @property
    def translate(self) -> tuple[float, float, float]:
        return (self.z0, self.y0, self.x0)

    @property
    def n(self) -> int:
        return self.nz * self.ny * self.nx

    def plane(self, k: int) -> PlaneGrid:
        return PlaneGrid(self.z0 + k * self.dz, self.y0, self.x0, self.dy, self.dx, self.ny, self.nx)

    def points(self, zs: slice | None = None) -> np.ndarray:
        """(n, 3) float32 points (x, y, z) of the z planes ``zs`` (all if None), C order (z, y, x)."""
        ks = np.arange(self.nz)[zs] if zs is not None else np.arange(self.nz)
        return np.concatenate([self.plane(int(k)).points() for k in ks]) if len(ks) else np.zeros((0, 3), np.float32)

    def flat_points(self, i0: int, i1: int) -> np.ndarray:
        """(i1 - i0, 3) float32 points (x, y, z) of the voxels with C-order (z, y, x) flat indices
        ``i0:i1`` — the same values as ``points()[i0:i1]``, without building the whole grid."""
        i = np.arange(int(i0), int(i1), dtype=np.int64)
        plane = self.ny * self.nx
        k, rem = np.divmod(i, plane)
        r, c = np.divmod(rem, self.nx)
        dt = point_dtype((self.x0, self.x0 + self.nx * self.dx, self.y0, self.y0 + self.ny * self.dy,
                          self.z0, self.z0 + self.nz * self.dz), min(self.dx, self.dy, self.dz))
        out = np.empty((len(i), 3), dtype=dt)
        out[:, 0] = self.x0 + c * self.dx
        out[:, 1] = self.y0 + r * self.dy
        out[:, 2] = self.z0 + k * self.dz
        return out

    def key(self) -> tuple:
        return ("volume", round(self.z0, 4), round(self.y0, 4), round(self.x0, 4), round(self.dz, 6),
                round(self.dy, 6), round(self.dx, 6), self.nz, self.ny, self.nx)


def grid_over(lo, hi, spacing_xy: float, spacing_z: float) -> VolumeGrid:
    """Voxel centres from ``lo`` on, every ``spacing_xy`` µm in x/y and ``spacing_z`` in z, up to
    ``hi`` (both (x, y, z) µm; the first voxel sits at ``lo`` itself, at least one per axis)."""
    lo, hi = (np.asarray(b, dtype=np.float64) for b in (lo, hi))
    sp = np.array([spacing_xy, spacing_xy, spacing_z], dtype=np.float64)  # (x, y, z)
    n = np.maximum(1, np.floor((hi - lo) / sp + 1e-9).astype(int) + 1)
    return VolumeGrid(float(lo[2]), float(lo[1]), float(lo[0]), float(sp[2]), float(sp[1]), float(sp[0]),
                      int(n[2]), int(n[1]), int(n[0]))


def volume_grid(bounds, resolution: int | None = None, *, shape=None, budget_bytes: float = 1 << 30,
                bytes_per_voxel: float = 8.0, min_axis: int | None = None,
                max_axis: int = VOLUME_MAX) -> VolumeGrid:
    """A voxel grid over ``bounds = (lo, hi)`` of (x, y, z) µm.

    Either ``resolution`` voxels along the longest axis with cubic voxels (the other axes in
    proportion, at least ``min_axis``), or an explicit ``shape = (nz, ny, nx)``. The grid is shrunk
    uniformly until ``n_voxels · bytes_per_voxel ≤ budget_bytes``. Raises InputError for a
    resolution or shape outside 1…``max_axis`` per axis (default 512; 64…512 is what the viewer
    offers; volumes streamed to disk allow :data:`VOLUME_MAX_OUT_OF_CORE`). Thin stacks
    keep at least ``min_axis`` (default ``resolution // 4``) planes, with longer voxels there.
    """
    lo, hi = (np.asarray(b, dtype=float) for b in bounds)
    ext = np.maximum(hi - lo, 1e-6)  # (x, y, z)
    if shape is not None:
        nz, ny, nx = (int(v) for v in shape)
        if min(nz, ny, nx) < 1 or max(nz, ny, nx) > max_axis:
            raise InputError(None, f"volume shape must be 1…{max_axis} voxels per axis, "
                                   f"got {nx}×{ny}×{nz} (x×y×z)")
        n = np.array([nx, ny, nz], dtype=float)
    else:
        res = int(resolution if resolution is not None else 128)
        if not 1 <= res <= max_axis:
            raise InputError(None, f"volume resolution must be 1…{max_axis} voxels, got {res}")
        voxel = ext.max() / res
        floor = max(2, res // 4) if min_axis is None else int(min_axis)
        n = np.maximum(np.ceil(ext / voxel), min(floor, res))
    total = float(np.prod(n))
    if total * bytes_per_voxel > budget_bytes:
        f = (budget_bytes / (total * bytes_per_voxel)) ** (1 / 3)
        n = np.maximum(np.floor(n * f), 2)
    nx, ny, nz = (int(v) for v in n)
    d = ext / n  # voxels tile the bounds exactly
    return VolumeGrid(float(lo[2] + d[2] / 2), float(lo[1] + d[1] / 2), float(lo[0] + d[0] / 2),
                      float(d[2]), float(d[1]), float(d[0]), nz, ny, nx)
