"""Expression-aware ICP between two sections (steps 3 and 5 of :mod:`.pairwise`).

:func:`icp`: soft, symmetric, coarse to fine — each spot is pulled to the mean of its nearest
spots in the other section weighted by exp(−d²/2σ²)·max(correlation, 0), both ways, and the
motion is re-solved in closed form (weighted Kabsch) as σ shrinks; spots outside the other
section's footprint carry no weight and targets near its edge are corrected for the inward pull
of a one-sided neighbourhood. :func:`peak_icp`: each spot paired with the best-correlated spot in a
window of a few spacings (the polish on cells).
"""

from __future__ import annotations

import numpy as np

from ..stack import apply_transform, estimate_spacing
from .kabsch import kabsch


def match_nearest(ya, xb, Fa, Fb, tree_b, *, k: int, sigma: float, lam: float):
    """For each moved point, the neighbour of lowest cost: (ib, dist, corr, cost)."""
    k = min(k, len(xb))
    d, j = tree_b.query(ya, k=k)
    if k == 1:
        d, j = d[:, None], j[:, None]
    corr = _correlations(Fb, j, Fa)
    cost = (d / sigma) ** 2 + lam * (1.0 - corr)
    best = np.argmin(cost, axis=1)
    r = np.arange(len(ya))
    return j[r, best], d[r, best], corr[r, best], cost[r, best]


FOOTPRINT = 1.5  # a spot is inside the other section's footprint if one of its spots is this many spacings away


class _EdgeShift:
    """Gaussian-weighted mean of each point's ``k`` nearest (itself included) − the point: ~0
    inside the point cloud, about σ inwards at its edge (one-sided neighbourhood). The
    neighbours are found once; a rigid or similarity motion ``A`` of the points moves the
    shifts by ``A`` (distances scale by ``scale``)."""

    def __init__(self, pts, k: int):
        from scipy.spatial import cKDTree

        self.k = min(k, len(pts))
        self.d, j = cKDTree(pts).query(pts, k=self.k)
        if self.k == 1:
            self.d, j = self.d[:, None], j[:, None]
        self.off = pts[j] - pts[:, None, :]  # n × k × 2

    def __call__(self, sigma: float, A=None, scale: float = 1.0) -> np.ndarray:
        g = np.exp(-0.5 * (scale * self.d / sigma) ** 2)
        e = np.einsum("nk,nki->ni", g, self.off) / g.sum(axis=1)[:, None]
        return e if A is None else e @ np.asarray(A).T


class _MovedTree:
    """Neighbour queries among the points ``x`` moved by ``M`` (rigid or similarity, scale ``s``),
    answered by the tree of the unmoved ``x``: the query points are moved back by ``M⁻¹`` and the
    distances scaled by ``s`` (a similarity keeps the order of distances). One tree per ICP run
    instead of one per iteration."""

    def __init__(self, tree, M, s: float):
        self.tree, self.Minv, self.s = tree, np.linalg.inv(M), s

    def query(self, p, k: int, distance_upper_bound: float = np.inf):
        d, j = self.tree.query(apply_transform(self.Minv, p), k=k,
                               distance_upper_bound=distance_upper_bound / self.s)
        return d * self.s, j


def _single(F):
    """Features in single precision for the ICP loops: each iteration gathers n × k feature rows,
    and half the bytes is most of its time; correlations need ~3 digits."""
    return np.ascontiguousarray(F, dtype=np.float32)


def _correlations(Fq, j, Fp):
    """corr[n, k] = Fq[j[n, k]] · Fp[n] (rows are unit vectors: Pearson correlations)."""
    return np.einsum("nkf,nf->nk", Fq[j], Fp)


def _soft_targets(p, q, Fp, Fq, tree_q, *, k: int, sigma: float, h_q: float, edge_q):
    """For each point of ``p``: expression- and distance-weighted mean of its ``k`` nearest in ``q``
    (weights exp(−d²/2σ²)·max(corr, 0)), and its weight in the fit (the largest of those).

    Partial overlap: the weight is 0 when no point of ``q`` lies within ``FOOTPRINT``·``h_q``
    (outside ``q``'s footprint); near ``q``'s edge the neighbours are all on one side, so the
    mean is pulled inwards (and every iteration would enlarge the overlap): the target is
    corrected by that pull, ``edge_q`` (:class:`_EdgeShift` of ``q``), at the nearest ``q`` point.
    """
    k = min(k, len(q))
    d, j = tree_q.query(p, k=k)
    if k == 1:
        d, j = d[:, None], j[:, None]
    corr = _correlations(Fq, j, Fp)
    g = np.exp(-0.5 * (d / sigma) ** 2) * np.clip(corr, 0, None)
    tot = g.sum(axis=1)
    tgt = np.einsum("nk,nki->ni", g, q[j]) / np.maximum(tot, 1e-300)[:, None] - edge_q[j[:, 0]]
    w = g.max(axis=1) * (d[:, 0] < FOOTPRINT * h_q)
    return tgt, w


def icp(xa, xb, Fa, Fb, M0, *, sigma0: float, sigma1: float, similarity: bool,
        n_iter: int = 40, k: int = 8):
    """Expression-aware, symmetric, soft ICP from ``M0`` (coarse to fine).

    Each spot is pulled to the weighted mean of its nearest spots in the other section, weights
    exp(−d²/2σ²)·max(correlation, 0), both ways; σ shrinks geometrically from ``sigma0`` to
    ``sigma1``. Soft targets at large σ do not lock onto a neighbouring row of a regular spot
    lattice. Partial overlap: spots outside the other section's footprint get no weight, and
    targets facing its edge are corrected for its inward pull.
    """
    from scipy.spatial import cKDTree

    tree_a, tree_b = cKDTree(xa), cKDTree(xb)
    h_a, h_b = estimate_spacing(xa), estimate_spacing(xb)
    edge_a, edge_b = _EdgeShift(xa, k), _EdgeShift(xb, k)
    Fa, Fb = _single(Fa), _single(Fb)

    def targets(it, M, ya, s_a):
        sigma = _anneal(sigma0, sigma1, it, 0.7 * n_iter)
        tb, wab = _soft_targets(ya, xb, Fa, Fb, tree_b, k=k, sigma=sigma, h_q=h_b, edge_q=edge_b(sigma))
        ta, wba = _soft_targets(xb, ya, Fb, Fa, _MovedTree(tree_a, M, s_a), k=k, sigma=sigma, h_q=s_a * h_a,
                                edge_q=edge_a(sigma, M[:2, :2], s_a))
        return tb, wab, ta, wba

    return _two_way_icp(xa, xb, M0, targets, n_iter=n_iter, settle=0.7, stop_step=1e-3 * sigma1,
                        similarity=similarity)


def _anneal(start: float, end: float, it: int, over: float) -> float:
    """Geometric schedule from ``start`` to ``end`` over the first ``over`` iterations."""
    return end * (start / end) ** max(0.0, 1.0 - it / over)


def _two_way_icp(xa, xb, M0, targets, *, n_iter: int, settle: float, stop_step: float, similarity: bool):
    """The ICP loop both variants share: ``targets(it, M, ya, s_a)`` pairs the moved spots ``ya`` of
    ``a`` with points of ``b`` and the spots of ``b`` with points of ``ya`` (each with weights);
    the motion is re-solved from both directions by weighted Kabsch. Stops when fewer than 3 pairs
    carry weight, or after ``settle`` × ``n_iter`` iterations once a step moves spots by less than
    ``stop_step`` (median)."""
    M = M0.copy()
    for it in range(n_iter):
        ya = apply_transform(M, xa)
        s_a = np.sqrt(abs(np.linalg.det(M[:2, :2])))
        tb, wab, ta, wba = targets(it, M, ya, s_a)
        src = np.concatenate([xa, apply_transform(np.linalg.inv(M), ta)])
        dst = np.concatenate([tb, xb])
        w = np.concatenate([wab, wba])
        if (w > 1e-12).sum() < 3:
            break
        try:
            M_new = kabsch(src, dst, weights=w, scale=similarity)
        except ValueError:
            break
        step = np.median(np.linalg.norm(apply_transform(M_new, xa) - ya, axis=1))
        M = M_new
        if it > settle * n_iter and step < stop_step:
            break
    return M


def _peak_targets(p, q, Fp, Fq, tree_q, *, radius: float, k: int, h_q: float):
    """For each point of ``p``: the point of ``q`` within ``radius`` whose expression correlates
    best with it, and its weight (that correlation, ≥ 0; 0 outside ``q``'s footprint)."""
    k = min(k, len(q))
    d, j = tree_q.query(p, k=k, distance_upper_bound=max(radius, FOOTPRINT * h_q))
    if k == 1:
        d, j = d[:, None], j[:, None]
    j = np.where(np.isfinite(d), j, 0)  # missing neighbours (beyond the bound) point at 0, masked
    corr = np.where(d <= radius, _correlations(Fq, j, Fp), -np.inf)
    best = np.argmax(corr, axis=1)
    r = np.arange(len(p))
    c = corr[r, best]
    w = np.where(np.isfinite(c) & (d[:, 0] < FOOTPRINT * h_q), np.clip(c, 0, None), 0.0)
    return q[j[r, best]], w


def peak_icp(xa, xb, Fa, Fb, M0, *, radius0: float, radius1: float, similarity: bool,
             n_iter: int = 40, k: int = 16):
    """Expression-peak ICP from ``M0``: each spot is paired with the best-correlated spot of the
    other section within a window (shrinking from ``radius0`` to ``radius1``), both ways, and
    the motion re-solved by weighted Kabsch.

    Soft ICP converges slowly along weakly constrained directions: between two real sections of
    single cells, a rotation of a few degrees changes its objective so little that where it stops
    depends on where it started. Picking the best-correlated partner in a window of a few spot
    spacings moves each spot decisively towards where its expression is, so the fixed point (and
    the result) no longer depends on the start.
    """
    from scipy.spatial import cKDTree

    tree_a, tree_b = cKDTree(xa), cKDTree(xb)
    h_a, h_b = estimate_spacing(xa), estimate_spacing(xb)
    Fa, Fb = _single(Fa), _single(Fb)

    def targets(it, M, ya, s_a):
        radius = _anneal(radius0, radius1, it, 0.6 * n_iter)
        tb, wab = _peak_targets(ya, xb, Fa, Fb, tree_b, radius=radius, k=k, h_q=h_b)
        ta, wba = _peak_targets(xb, ya, Fb, Fa, _MovedTree(tree_a, M, s_a), radius=radius, k=k, h_q=s_a * h_a)
        return tb, wab, ta, wba

    return _two_way_icp(xa, xb, M0, targets, n_iter=n_iter, settle=0.6, stop_step=1e-3 * radius1,
                        similarity=similarity)
