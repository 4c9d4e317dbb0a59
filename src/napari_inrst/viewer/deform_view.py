"""What the Align widget shows of one section's smooth deformation (no Qt, no napari objects):
a warped grid (paths for a Shapes layer) and a magnitude map (an image for an Image layer), both in
the stack frame, µm, (y, x) order like every 2D overlay of the plugin.

A :class:`~napari_inrst.align.deform.Deformation` moves a section's input coordinates before its
transform (``stack xy = M · (x + d(x))``). The grid: the knot lines of the deformation's B-spline
grid (its box in the section's input frame), each sampled densely, moved by ``d`` and placed by
``M`` — so a vertex sits ``M₂ₓ₂ · d(x)`` away from where the straight grid would put it (``|d(x)|``
for a rigid transform). The magnitude map: ``|d|`` (µm) at the input point ``M⁻¹ p`` of each pixel
centre ``p`` of a raster over the section's placed cells, NaN away from the tissue (outside the
convex hull of its cells, or farther than one cell spacing, or one pixel, from every cell).
"""

from __future__ import annotations

import numpy as np

#: what the magnitude map's colorbar / legend names
MAGNITUDE_LABEL = "deformation |d| (µm)"
#: points sampled along each grid line
LINE_SAMPLES = 41
#: pixels of the magnitude map along the section's longer side
MAP_PIXELS = 160


def grid_lines(deformation, samples: int = LINE_SAMPLES) -> list[np.ndarray]:
    """The knot lines of ``deformation``'s grid box (input frame, (x, y)), each ``samples`` points:
    first the lines of constant x, then those of constant y."""
    nx, ny = deformation.shape[0] - 3, deformation.shape[1] - 3
    o, h = deformation.origin, deformation.spacing
    xs = o[0] + h[0] * np.arange(nx + 1)
    ys = o[1] + h[1] * np.arange(ny + 1)
    t_y = np.linspace(ys[0], ys[-1], samples)
    t_x = np.linspace(xs[0], xs[-1], samples)
    lines = [np.column_stack([np.full(samples, x), t_y]) for x in xs]
    lines += [np.column_stack([t_x, np.full(samples, y)]) for y in ys]
    return lines


def warped_grid(transform, deformation, samples: int = LINE_SAMPLES) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(warped, straight): the grid lines placed with the deformation and without it, each an
    (samples, 2) array of (y, x) in the stack frame (µm) — the paths of a Shapes layer."""
    from ..stack import apply_transform

    warped, straight = [], []
    for line in grid_lines(deformation, samples):
        w = apply_transform(transform, deformation.apply(line))
        s = apply_transform(transform, line)
        warped.append(w[:, ::-1].copy())
        straight.append(s[:, ::-1].copy())
    return warped, straight


def magnitude_map(section, deformation, pixels: int = MAP_PIXELS):
    """|d| (µm) over the placed section: ``(image (ny, nx) float32, scale (dy, dx), translate (y0, x0))``
    for an Image layer (translate = the centre of pixel 0); NaN away from the tissue."""
    from scipy.spatial import Delaunay, cKDTree

    from ..stack import apply_transform, estimate_spacing

    M = np.asarray(section.transform, dtype=np.float64)
    xin = np.asarray(section.xy_input, dtype=np.float64)
    placed = apply_transform(M, xin)
    lo, hi = placed.min(axis=0), placed.max(axis=0)
    h = max(float((hi - lo).max()) / max(int(pixels), 1), 1e-9)
    nx, ny = int(np.ceil((hi[0] - lo[0]) / h)) + 1, int(np.ceil((hi[1] - lo[1]) / h)) + 1
    px = lo[0] + h * np.arange(nx)
    py = lo[1] + h * np.arange(ny)
    P = np.stack(np.meshgrid(px, py, indexing="xy"), axis=-1).reshape(-1, 2)  # rows: y, columns: x
    X = apply_transform(np.linalg.inv(M), P)  # the input point of each pixel centre
    dist, _ = cKDTree(xin).query(X, k=1)
    near = dist <= max(estimate_spacing(xin), h)
    if len(xin) >= 3:
        try:
            near &= Delaunay(xin).find_simplex(X) >= 0
        except Exception:  # noqa: BLE001 - collinear cells (qhull): the distance rule alone
            pass
    mag = np.full(len(P), np.nan, dtype=np.float64)
    mag[near] = np.linalg.norm(deformation.displacement(X[near]), axis=1)
    return mag.reshape(ny, nx).astype(np.float32), (h, h), (float(lo[1]), float(lo[0]))


def cell_magnitudes(section, deformation) -> np.ndarray:
    """(n,) |d| (µm) at the section's cells (input frame)."""
    if deformation is None:
        return np.zeros(section.n_obs)
    return np.linalg.norm(deformation.displacement(section.xy_input), axis=1)


def summary(name: str, deformation, section) -> str:
    """One line: the section's deformation (mean / max |d| at its cells), or that it has none."""
    if deformation is None:
        return f"{name}: no deformation (rigid only)"
    m = cell_magnitudes(section, deformation)
    return (f"{name}: {MAGNITUDE_LABEL} mean {m.mean():.1f}, max {m.max():.1f} at the cells "
            f"(bound {deformation.max_disp_um:.0f} µm)")
