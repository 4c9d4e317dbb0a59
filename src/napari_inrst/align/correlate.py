"""Expression-correlation refinement of a pairwise rigid fit (the last step on single cells).

The rigid start (expression matching, Kabsch, soft ICP, expression-peak polish) pairs each cell
with *one* partner (a weighted mean, or the best-correlated cell in a window). Between sections of
single cells those partners are noisy: a cell's nearest cells in the next section are other cells,
and where the fit stops is off by a few µm per pair (2–8 µm on the moved atlas), which the chain of
pairs adds up. This step uses every nearby pair at once: it maximizes

    f(θ, t) = Σ_i Σ_j exp(−|U(θ, t) y_i − x_j|² / 2s²) · c_ij

over a small rigid update ``U`` (rotation ``θ`` about the moved cells' centroid, translation ``t``)
of the start, where ``y_i`` are the moving section's cells as the start places them, ``x_j`` the
fixed section's, ``c_ij`` the correlation of their expression profiles (the pair's features), and
``s`` about three cell spacings: the motion that puts similar expression over similar expression
on average, a smooth objective with one broad peak near a good start. The correlations do not
depend on the motion, so each evaluation only recomputes Gaussian weights (the pairs within a
cutoff are found once per outer round). Bounded (``max_angle_deg``, ``max_shift`` from the start;
L-BFGS-B); the start is kept when ``f`` does not improve. Not used on regular spot lattices, where
soft ICP converges and the anatomy's drift between sections would pull a correlation fit.
"""

from __future__ import annotations

import numpy as np

from ..stack import apply_transform, estimate_spacing

SCALE = 3.0  # Gaussian neighbourhood, in cell spacings
MAX_ANGLE_DEG = 8.0  # bound on the update's rotation
MAX_SHIFT = 2.0  # bound on the update's translation, in neighbourhood scales
CUTOFF = 3.5  # pairs farther apart than this many scales (at the current motion) are left out
ROUNDS = 4  # outer rounds: find pairs, optimize with them fixed
MAX_CELLS = 2000  # moving cells used (a fixed random subset beyond this; all fixed cells are kept)


def _pairs(y, xb, tree_b, r):
    """Index arrays (i, j) of the pairs |y_i − x_j| < r."""
    lists = tree_b.query_ball_point(y, r, return_sorted=False)
    n = np.fromiter((len(a) for a in lists), dtype=np.intp, count=len(lists))
    j = np.fromiter((v for a in lists for v in a), dtype=np.intp, count=int(n.sum()))
    return np.repeat(np.arange(len(y)), n), j


def _update(p, arm):
    """3×3 of the update p = (θ·arm, tx, ty) about the origin (points are centred on the pivot)."""
    th = p[0] / arm
    c, s = np.cos(th), np.sin(th)
    return np.array([[c, -s, p[1]], [s, c, p[2]], [0.0, 0.0, 1.0]])


def objective(y, xb, corr, i, j, s, M=None):
    """f of the module notes for pairs (i, j) with correlations ``corr``; ``y`` moved by ``M``."""
    if M is not None:
        y = apply_transform(M, y)
    d = y[i] - xb[j]
    return float(np.exp(-0.5 * (d * d).sum(1) / (s * s)) @ corr)


def correlate_refine(xa, xb, Fa, Fb, M0, *, scale: float | None = None, max_angle_deg: float = MAX_ANGLE_DEG,
                     max_shift: float | None = None):
    """Refined 3×3 motion (moving ``xa`` → fixed ``xb``) from the rigid start ``M0``, and a dict of
    diagnostics (``gain``: relative increase of f; ``angle_deg``, ``shift_um``: the update; ``kept``:
    whether the start was kept). ``Fa``, ``Fb``: unit-norm expression profiles (rows), so their dot
    products are correlations. ``scale`` (µm): the Gaussian neighbourhood, default :data:`SCALE`
    cell spacings; ``max_shift`` (µm): default :data:`MAX_SHIFT` scales."""
    from scipy.optimize import minimize
    from scipy.spatial import cKDTree

    xa = np.asarray(xa, dtype=np.float64)
    xb = np.asarray(xb, dtype=np.float64)
    Fa = np.asarray(Fa, dtype=np.float32)
    Fb = np.asarray(Fb, dtype=np.float32)
    M0 = np.asarray(M0, dtype=np.float64)
    h = max(estimate_spacing(xa), estimate_spacing(xb))
    if len(xa) > MAX_CELLS:  # the objective is a sum over moving cells: a random subset estimates it
        keep = np.sort(np.random.default_rng(0).choice(len(xa), MAX_CELLS, replace=False))
        xa, Fa = xa[keep], Fa[keep]
    s = SCALE * h if scale is None else float(scale)
    max_shift = MAX_SHIFT * s if max_shift is None else float(max_shift)
    info = {"gain": 0.0, "angle_deg": 0.0, "shift_um": 0.0, "kept": True, "scale_um": s}
    y0 = apply_transform(M0, xa)
    pivot = y0.mean(axis=0)
    y0 = y0 - pivot
    xc = xb - pivot
    arm = float(np.sqrt((y0 ** 2).sum(1).mean())) or 1.0  # rotation expressed as µm at the RMS radius
    tree_b = cKDTree(xc)
    amax = np.deg2rad(max_angle_deg) * arm
    bounds = [(-amax, amax), (-max_shift, max_shift), (-max_shift, max_shift)]

    def fg(p, i, j, corr):
        U = _update(p, arm)
        y = y0 @ U[:2, :2].T + U[:2, 2]
        d = y[i] - xc[j]
        w = np.exp(-0.5 * (d * d).sum(1) / (s * s)) * corr
        f = w.sum()
        gy = np.column_stack([np.bincount(i, -w * d[:, k], minlength=len(y)) for k in (0, 1)]) / (s * s)
        # ∂f/∂y_i = Σ_j −w_ij d_ij / s²
        dth = (y - U[:2, 2]) @ np.array([[0.0, 1.0], [-1.0, 0.0]])  # ∂y/∂θ = J (y − t), J = [[0, −1], [1, 0]]
        g = np.array([(gy * dth).sum() / arm, gy[:, 0].sum(), gy[:, 1].sum()])
        return -f / norm, -g / norm

    p = np.zeros(3)
    i, j = _pairs(y0, xc, tree_b, CUTOFF * s)
    if len(i) < 3:
        return M0, info
    corr = np.einsum("nf,nf->n", Fa[i], Fb[j]).astype(np.float64)
    f_start = objective(y0, xc, corr, i, j, s)
    norm = max(abs(f_start), 1e-12)
    for _ in range(ROUNDS):
        r = minimize(fg, p, args=(i, j, corr), jac=True, method="L-BFGS-B", bounds=bounds,
                     options={"maxiter": 100})
        moved = np.abs(r.x - p).max()
        p = r.x
        if moved < 1e-3 * h:
            break
        U = _update(p, arm)  # the pairs within the cutoff at the new motion
        i, j = _pairs(y0 @ U[:2, :2].T + U[:2, 2], xc, tree_b, CUTOFF * s)
        corr = np.einsum("nf,nf->n", Fa[i], Fb[j]).astype(np.float64)
    # start and end, each on the pairs within the cutoff at its motion (the tail beyond is ~e^-6)
    U = _update(p, arm)
    y1 = y0 @ U[:2, :2].T + U[:2, 2]
    i1, j1 = _pairs(y1, xc, tree_b, CUTOFF * s)
    f0 = f_start
    f1 = objective(y1, xc, np.einsum("nf,nf->n", Fa[i1], Fb[j1]).astype(np.float64), i1, j1, s)
    if not f1 > f0:
        return M0, info
    T = np.eye(3)
    T[:2, 2] = pivot
    Tinv = np.eye(3)
    Tinv[:2, 2] = -pivot
    M = T @ U @ Tinv @ M0
    info.update(gain=float((f1 - f0) / max(abs(f0), 1e-12)), angle_deg=float(np.rad2deg(p[0] / arm)),
                shift_um=float(np.hypot(p[1], p[2])), kept=False)
    return M, info
