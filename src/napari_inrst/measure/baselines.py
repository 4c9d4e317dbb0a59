"""Interpolation baselines the field must beat, exactly as ``docs/EVALUATION.md`` defines them.

* :func:`knn3d` – inverse-distance weighted mean of the 5 nearest kept cells/spots in 3D
  (stack frame, z = section position).
* :func:`adjacent` – for each query, the mean of its 3 nearest cells (in x, y) in each of the two
  neighbouring kept sections (nearest below and nearest above in z), averaged over the two.
  A query with a kept section on one side only uses that one.
* :func:`knn2d` – inverse-distance weighted mean of the 4 nearest kept spots (intra-section).

Inverse-distance weights are ``1 / max(d, eps)`` (power 1), normalized to sum 1; a query that
coincides with a kept point takes that point's value. Each has a predictor class with
``.predict(xyz)`` so the evaluation protocol treats baselines and fields alike.
"""

from __future__ import annotations

import numpy as np

EPS_UM = 1e-6


def idw(train_pts, train_X, query_pts, k: int, power: float = 1.0) -> np.ndarray:
    """Inverse-distance weighted mean of the ``k`` nearest training points (any dimension)."""
    from scipy.spatial import cKDTree

    train_pts = np.asarray(train_pts, dtype=np.float64)
    query_pts = np.asarray(query_pts, dtype=np.float64)
    train_X = np.asarray(train_X)
    k = int(min(k, len(train_pts)))
    if k < 1:
        raise ValueError("no training points")
    d, idx = cKDTree(train_pts).query(query_pts, k=k)
    d = d.reshape(len(query_pts), k)
    idx = idx.reshape(len(query_pts), k)
    w = 1.0 / np.maximum(d, EPS_UM) ** power
    w /= w.sum(axis=1, keepdims=True)
    out = np.zeros((len(query_pts), train_X.shape[1]), dtype=np.float64)
    for j in range(k):
        out += w[:, j:j + 1] * train_X[idx[:, j]]
    return out.astype(np.float32)


def knn_mean(train_xy, train_X, query_xy, k: int) -> np.ndarray:
    """Plain mean of the ``k`` nearest training points."""
    from scipy.spatial import cKDTree

    k = int(min(k, len(train_xy)))
    _, idx = cKDTree(np.asarray(train_xy, dtype=np.float64)).query(np.asarray(query_xy, dtype=np.float64), k=k)
    idx = idx.reshape(len(query_xy), k)
    train_X = np.asarray(train_X)
    return np.mean([train_X[idx[:, j]] for j in range(k)], axis=0).astype(np.float32)


def knn3d(train_xyz, train_X, query_xyz, k: int = 5) -> np.ndarray:
    """IDW mean of the ``k`` (5) nearest kept cells in 3D."""
    return idw(train_xyz, train_X, query_xyz, k)


def knn2d(train_xy, train_X, query_xy, k: int = 4) -> np.ndarray:
    """IDW mean of the ``k`` (4) nearest kept spots in 2D."""
    return idw(np.asarray(train_xy)[:, :2], train_X, np.asarray(query_xy)[:, :2], k)


def adjacent(sections, query_xyz, k: int = 3) -> np.ndarray:
    """Mean of the ``k`` nearest (x, y) cells in the nearest kept section below and above each query.

    ``sections``: list of ``(z, xy, X)`` of the kept sections. Queries at the z of a kept section
    use the sections below and above it (never itself).
    """
    query_xyz = np.asarray(query_xyz, dtype=np.float64)
    secs = sorted(sections, key=lambda s: s[0])
    if not secs:
        raise ValueError("no kept sections")
    zs = np.array([s[0] for s in secs], dtype=np.float64)
    g = np.asarray(secs[0][2]).shape[1]
    out = np.zeros((len(query_xyz), g), dtype=np.float64)
    qz = query_xyz[:, 2]
    below = np.searchsorted(zs, qz, side="left") - 1  # last section strictly below
    above = np.searchsorted(zs, qz, side="right")  # first section strictly above
    key = np.column_stack([below, above])
    for b, a in np.unique(key, axis=0):
        rows = np.flatnonzero((below == b) & (above == a))
        parts = [secs[j] for j in (b, a) if 0 <= j < len(secs)]
        if not parts:  # only one kept section and the query is at its z
            parts = [secs[int(np.argmin(np.abs(zs - qz[rows[0]])))]]
        acc = np.zeros((len(rows), g))
        for _, xy, X in parts:
            acc += knn_mean(xy, X, query_xyz[rows, :2], k)
        out[rows] = acc / len(parts)
    return out.astype(np.float32)


class KNN3D:
    """Predictor: :func:`knn3d` over the given sections of a stack."""

    name = "knn3d"

    def __init__(self, stack, sections=None, k: int = 5):
        idx = stack.training_sections() if sections is None else list(sections)
        self.xyz = stack.coords(idx)
        self.X = stack.expression(idx)
        self.k = k

    def predict(self, xyz) -> np.ndarray:
        return knn3d(self.xyz, self.X, xyz, self.k)


class Adjacent:
    """Predictor: :func:`adjacent` (mean of the two neighbouring kept sections)."""

    name = "adjacent"

    def __init__(self, stack, sections=None, k: int = 3):
        idx = stack.training_sections() if sections is None else list(sections)
        self.sections = [(stack[i].z, stack[i].xy, stack[i].X) for i in idx]
        self.k = k

    def predict(self, xyz) -> np.ndarray:
        return adjacent(self.sections, xyz, self.k)


class KNN2D:
    """Predictor: :func:`knn2d` within the given sections (z ignored; for intra-section completion)."""

    name = "knn2d"

    def __init__(self, stack, sections=None, k: int = 4):
        idx = stack.training_sections() if sections is None else list(sections)
        self.xy = stack.coords(idx)[:, :2]
        self.X = stack.expression(idx)
        self.k = k

    def predict(self, xyz) -> np.ndarray:
        return knn2d(self.xy, self.X, xyz, self.k)


def fit_knn3d(stack, sections):
    return KNN3D(stack, sections)


def fit_adjacent(stack, sections):
    return Adjacent(stack, sections)


def fit_knn2d(stack, sections):
    return KNN2D(stack, sections)


BASELINES = {"knn3d": fit_knn3d, "adjacent": fit_adjacent, "knn2d": fit_knn2d}
