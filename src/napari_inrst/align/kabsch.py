"""Closed-form rigid / similarity fits of matched 2D points (Kabsch / Umeyama), homogeneous 3×3.

INRScrecon §3.1: centre both point sets, H = Σ w (x − x̄)(y − ȳ)ᵀ, SVD H = U S Vᵀ, R = V Uᵀ
(with the reflection guard D = diag(1, sign det(V Uᵀ))), t = ȳ − R x̄. With ``scale`` the uniform
scale of Umeyama (1991) is added: s = tr(S D) / Σ w |x − x̄|².
"""

from __future__ import annotations

import numpy as np


def kabsch(x, y, weights=None, allow_reflection: bool = False, scale: bool = False) -> np.ndarray:
    """The 3×3 homogeneous transform ``M`` minimizing Σ wᵢ |M xᵢ − yᵢ|² (``x``, ``y``: n×2, matched).

    Rigid (rotation + translation) by default; ``allow_reflection`` lets det R = −1 when that
    fits better; ``scale`` adds a uniform scale (similarity). Raises ``ValueError`` for fewer than
    two points (with positive weight), mismatched shapes or coincident points.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2 or x.shape != y.shape:
        raise ValueError(f"kabsch needs two n×2 arrays of matched points; got {x.shape} and {y.shape}")
    w = np.ones(len(x)) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if w.shape != (len(x),) or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be one finite, non-negative number per point")
    if (w > 0).sum() < 2:
        raise ValueError(f"kabsch needs at least 2 matched points with positive weight; got {(w > 0).sum()}")
    w = w / w.sum()
    xm = w @ x
    ym = w @ y
    xc = x - xm
    yc = y - ym
    var_x = float(w @ (xc ** 2).sum(axis=1))
    if var_x <= 1e-18 * max(1.0, float(np.abs(x).max()) ** 2):
        raise ValueError("kabsch: the source points all coincide")
    H = (xc * w[:, None]).T @ yc
    U, S, Vt = np.linalg.svd(H)
    d = 1.0
    if not allow_reflection and np.linalg.det(Vt.T @ U.T) < 0:
        d = -1.0
    D = np.diag([1.0, d])
    R = Vt.T @ D @ U.T
    s = float((S * np.diag(D)).sum() / var_x) if scale else 1.0
    M = np.eye(3)
    M[:2, :2] = s * R
    M[:2, 2] = ym - s * R @ xm
    return M


def rigid_params(matrix) -> dict:
    """Angle (degrees), uniform scale, translation and mirror flag of a 2D similarity matrix."""
    m = np.asarray(matrix, dtype=np.float64)
    A = m[:2, :2]
    det = float(np.linalg.det(A))
    mirrored = det < 0
    B = A @ np.diag([-1.0, 1.0]) if mirrored else A  # A = R·F  → R = A·F
    s = float(np.sqrt(abs(det)))
    angle = float(np.degrees(np.arctan2(B[1, 0], B[0, 0])))
    return {"angle_deg": angle, "scale": s, "shift": [float(m[0, 2]), float(m[1, 2])], "mirrored": bool(mirrored)}


def compose(*matrices) -> np.ndarray:
    """Product of 3×3 matrices (the last applied first)."""
    out = np.eye(3)
    for m in matrices:
        out = out @ np.asarray(m, dtype=np.float64)
    return out


def rigid_matrix(angle_deg: float = 0.0, shift=(0.0, 0.0), mirror: bool = False, center=(0.0, 0.0)) -> np.ndarray:
    """3×3 homogeneous matrix: optional mirror in x about ``center``, rotation by ``angle_deg``
    about ``center``, then translation by ``shift``."""
    a = np.deg2rad(angle_deg)
    R = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    if mirror:
        R = R @ np.diag([-1.0, 1.0])
    c = np.asarray(center, dtype=float)
    M = np.eye(3)
    M[:2, :2] = R
    M[:2, 2] = c - R @ c + np.asarray(shift, dtype=float)
    return M
