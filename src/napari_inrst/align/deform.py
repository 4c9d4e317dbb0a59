"""Smooth non-rigid deformation of a section: a cubic B-spline displacement grid in its plane.

A :class:`Deformation` moves each point of a section in the section's own input frame (µm, after
the stack's ``unit_factor``), *before* its 3×3 transform::

    stack xy = M · (x + d(x)),   d(x) = Σ_ij B_i(u) B_j(v) c_ij   (u, v: x in knot spacings)

``c`` (control displacements, µm, shape ``(nx + 3, ny + 3, 2)``) on a uniform knot grid covering
the section's bounding box. All zero is the identity. Cubic B-spline weights are non-negative and
sum to 1, so ``|d_x|, |d_y| ≤ max |c| ≤ max_disp_um`` everywhere (the bound; optimizers write
``c = max_disp_um · tanh(raw)``). Beyond the box the displacement at the nearest box point holds.
Because the deformation lives in the input frame, a later change of the rigid transform carries it
along with the tissue.

Smoothness: :func:`bending` — the mean squared second differences of ``c`` (a discrete bending
energy, µm²), in numpy or torch alike. Storage: :meth:`Deformation.to_json` /
:meth:`Deformation.from_json` (plain JSON numbers; validated on reading; no pickle). A model stores
``stack_meta["deformation"] = deformations_json(...)``; ``napari-inrst align --method nonrigid``
writes each section's JSON next to its matrix.

The displacement is linear in ``c``: :meth:`Deformation.basis` gives, for fixed points, the 16
weights and control indices of each point, so optimizers evaluate ``d`` in torch by one gather.
No torch at import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

FORMAT = "napari-inrst-deformation/1 (cubic B-spline grid, section input frame µm, before the transform)"
#: knot intervals across the section's larger side (a 4 × 4 grid of 7 × 7 control points for a square)
CELLS = 4
#: bound on each displacement component, as a fraction of the section's larger side
MAX_FRACTION = 0.08
#: grid boxes are the section's bounding box padded by this fraction on each side
PAD = 0.02


def _cubic_weights(t):
    """(n,) fractions in [0, 1) → (n, 4) uniform cubic B-spline weights (numpy)."""
    t2, t3 = t * t, t * t * t
    return np.stack([(1 - t) ** 3, 3 * t3 - 6 * t2 + 4, -3 * t3 + 3 * t2 + 3 * t + 1, t3], axis=1) / 6.0


@dataclass
class Deformation:
    """One section's displacement grid (see the module docstring)."""

    origin: np.ndarray  # (2,) µm: first knot (lower corner of the grid box), input frame
    spacing: np.ndarray  # (2,) µm between knots
    coef: np.ndarray  # (nx + 3, ny + 3, 2) control displacements, µm
    max_disp_um: float
    enabled: bool = True

    def __post_init__(self):
        self.origin = np.asarray(self.origin, dtype=np.float64).reshape(2)
        self.spacing = np.asarray(self.spacing, dtype=np.float64).reshape(2)
        self.coef = np.asarray(self.coef, dtype=np.float64)
        self.max_disp_um = float(self.max_disp_um)

    @classmethod
    def for_points(cls, xy, cells: int = CELLS, max_fraction: float = MAX_FRACTION) -> Deformation:
        """A zero (identity) grid covering ``xy`` (n × 2, the section's input coordinates, µm)."""
        xy = np.asarray(xy, dtype=np.float64)
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        size = np.maximum(hi - lo, 1e-6)
        side = float(size.max())
        lo, size = lo - PAD * side, size + 2 * PAD * side
        h = float(size.max()) / max(int(cells), 1)
        n = np.maximum(1, np.ceil(size / h - 1e-9)).astype(int)
        sp = size / n  # exact cover of the box
        return cls(lo, sp, np.zeros((n[0] + 3, n[1] + 3, 2)), max_fraction * side)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.coef.shape[0]), int(self.coef.shape[1])

    def is_identity(self) -> bool:
        return not self.enabled or not np.any(self.coef)

    def basis(self, xy) -> tuple[np.ndarray, np.ndarray]:
        """For points ``xy`` (n × 2, input frame): (n, 16) weights and (n, 16) flat indices into
        ``coef.reshape(-1, 2)`` with ``d = Σ_k w[:, k] · coef_flat[idx[:, k]]``."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        nx, ny = self.shape[0] - 3, self.shape[1] - 3
        u = np.clip((xy - self.origin) / self.spacing, 0.0, [nx, ny])
        i = np.minimum(np.floor(u).astype(np.int64), [nx - 1, ny - 1])
        t = u - i
        wx, wy = _cubic_weights(t[:, 0]), _cubic_weights(t[:, 1])
        w = (wx[:, :, None] * wy[:, None, :]).reshape(-1, 16)
        ix = i[:, 0:1] + np.arange(4)  # (n, 4)
        iy = i[:, 1:2] + np.arange(4)
        idx = (ix[:, :, None] * self.shape[1] + iy[:, None, :]).reshape(-1, 16)
        return w, idx

    def displacement(self, xy) -> np.ndarray:
        """(n, 2) displacement (µm, input frame) at ``xy``; zeros when disabled."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        if not self.enabled:
            return np.zeros_like(xy)
        w, idx = self.basis(xy)
        return np.einsum("nk,nkc->nc", w, self.coef.reshape(-1, 2)[idx])

    def apply(self, xy) -> np.ndarray:
        """``xy + d(xy)`` (input frame, µm)."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        return xy + self.displacement(xy)

    def grid_points(self, n: int = 24) -> np.ndarray:
        """An n × n lattice of points over the grid's box (input frame), e.g. to summarise or draw it."""
        nx, ny = self.shape[0] - 3, self.shape[1] - 3
        gx = self.origin[0] + np.linspace(0, nx * self.spacing[0], n)
        gy = self.origin[1] + np.linspace(0, ny * self.spacing[1], n)
        return np.stack(np.meshgrid(gx, gy, indexing="ij"), axis=-1).reshape(-1, 2)

    def bending(self) -> float:
        return float(bending(self.coef))

    def to_json(self) -> dict:
        return {"grid": {"origin": [float(v) for v in self.origin], "spacing": [float(v) for v in self.spacing],
                         "shape": list(self.shape)},
                "max_disp_um": float(self.max_disp_um), "enabled": bool(self.enabled),
                "coef": self.coef.tolist()}

    @classmethod
    def from_json(cls, d, source=None, what: str = "deformation") -> Deformation:
        """Read (and validate) :meth:`to_json`'s dict; problems are :class:`InputError` naming ``source``."""
        def bad(msg):
            raise InputError(source, f"{what}: {msg}")

        if not isinstance(d, dict) or not isinstance(d.get("grid"), dict):
            bad("must be a JSON object with a 'grid'")
        g = d["grid"]
        try:
            origin = np.asarray(g["origin"], dtype=np.float64)
            sp = np.asarray(g["spacing"], dtype=np.float64)
            shape = tuple(int(v) for v in g["shape"])
            coef = np.asarray(d["coef"], dtype=np.float64)
            m = float(d["max_disp_um"])
        except (KeyError, TypeError, ValueError):
            bad("needs grid.origin, grid.spacing, grid.shape, coef and max_disp_um as numbers")
        if origin.shape != (2,) or sp.shape != (2,) or len(shape) != 2:
            bad("grid.origin and grid.spacing must be 2 numbers, grid.shape 2 whole numbers")
        if min(shape) < 4 or shape[0] * shape[1] > 1_000_000:
            bad(f"grid.shape {list(shape)} must be ≥ 4 per side (and not huge)")
        if coef.shape != shape + (2,):
            bad(f"coef has shape {list(coef.shape)}, expected {list(shape) + [2]}")
        if not (np.isfinite(origin).all() and np.isfinite(sp).all() and np.isfinite(coef).all() and math.isfinite(m)):
            bad("holds NaN or infinite values")
        if (sp <= 0).any() or m < 0:
            bad("grid.spacing must be positive and max_disp_um not negative")
        if np.abs(coef).max(initial=0.0) > m * (1 + 1e-6) + 1e-9:
            bad(f"control displacements exceed max_disp_um ({m:g} µm)")
        enabled = d.get("enabled", True)
        if not isinstance(enabled, bool):
            bad("'enabled' must be true or false")
        return cls(origin, sp, coef, m, enabled)


def bending(coef):
    """Discrete bending energy of a control grid (numpy array or torch tensor, (nx, ny, 2), µm):
    mean of dxx² + 2·dxy² + dyy² over the grid (µm²). Zero for any affine displacement."""
    dxx = coef[2:] - 2 * coef[1:-1] + coef[:-2]
    dyy = coef[:, 2:] - 2 * coef[:, 1:-1] + coef[:, :-2]
    dxy = coef[1:, 1:] - coef[1:, :-1] - coef[:-1, 1:] + coef[:-1, :-1]
    return (dxx ** 2).mean() + 2 * (dxy ** 2).mean() + (dyy ** 2).mean()


def deformations_json(names, deformations) -> dict:
    """What a model stores in ``stack_meta["deformation"]``: per section (input order) its grid or None."""
    return {"format": FORMAT,
            "sections": [None if d is None else dict(d.to_json(), section=str(n)) for n, d in zip(names, deformations)]}


def deformations_from_meta(stack_meta: dict, source=None) -> list:
    """Per section a :class:`Deformation` or None from ``stack_meta["deformation"]`` ([] without one)."""
    block = stack_meta.get("deformation")
    if block is None:
        return []
    if not isinstance(block, dict) or not isinstance(block.get("sections"), list):
        raise InputError(source, "the model's 'deformation' must be an object with a 'sections' list")
    names = stack_meta.get("names") or []
    if names and len(block["sections"]) != len(names):
        raise InputError(source, f"the model stores {len(block['sections'])} deformations for {len(names)} sections")
    return [None if d is None else Deformation.from_json(d, source, f"deformation of section {k}")
            for k, d in enumerate(block["sections"])]


def get_deformations(stack) -> list:
    """Per section of ``stack`` its :class:`Deformation` or None."""
    return [getattr(s, "deformation", None) for s in stack.sections]


def set_deformations(stack, deformations):
    """Attach ``deformations`` (per section a :class:`Deformation` or None) to ``stack``'s sections:
    their stack-frame coordinates (``section.xy``) then include them."""
    if len(deformations) != len(stack.sections):
        raise ValueError(f"{len(deformations)} deformations for {len(stack.sections)} sections")
    for s, d in zip(stack.sections, deformations):
        s.deformation = d
    return stack


def magnitude_stats(deformation, xy) -> dict:
    """Mean and max displacement (µm) of ``deformation`` at the points ``xy``."""
    if deformation is None or len(xy) == 0:
        return {"mean_um": 0.0, "max_um": 0.0}
    m = np.linalg.norm(deformation.displacement(xy), axis=1)
    return {"mean_um": float(m.mean()), "max_um": float(m.max())}
