"""Expression-matched fit of the per-section deformations of :mod:`.deform` (grids start at zero).

On top of the rigid transforms (which it leaves unchanged), the reference fixed (the field-driven
fit, ``fit --deform``, is :mod:`napari_inrst.field.warp`):

* :func:`match_deformations` (``napari-inrst align --method nonrigid``; the Align widget's
  "Non-rigid (deform)" through :func:`iter_align_nonrigid`): every cell of a section
  is pulled towards the best-correlated cell within a radius in each adjacent section (expression
  peaks, as the rigid polish; the radius shrinks from a quarter of the bound to 1.5 spacings over
  the sweeps), and each section's grid is solved in closed form (weighted least squares, bending
  penalty, small ridge, then clipped to the bound) against those targets; sections are updated in
  turn, nearest to the reference first (the reference never moves), for a few sweeps; fitted on
  two random halves of the cells and shrunk to what both halves agree on. No torch.

Measured (``benchmarks/bench_deform.py``, MERFISH sections 50 µm apart): the matches between
adjacent sections follow the anatomy's own change from section to section as much as the warp, so
this fit does not recover known warps there and adds error where there is none (README,
Alignment); it is offered for strongly warped sections, not used by ``fit``.
"""

from __future__ import annotations

import math

import numpy as np

from .deform import Deformation

#: expression-matched fit: sweeps over the sections, bending weight (relative), ridge (relative)
SWEEPS = 6
BEND = 0.03
RIDGE = 1e-4


def zero_grid(section) -> Deformation:
    """A zero (identity) grid over ``section``'s input coordinates."""
    return Deformation.for_points(section.xy_input)


# --- expression-matched --------------------------------------------------------------------------

def _expression(stack, k) -> np.ndarray:
    """Section ``k``'s expression as the rigid alignment matches it (values given without
    normalization are log-compressed)."""
    X = np.asarray(stack[k].X)
    if getattr(stack, "normalize", "log1p") == "none" and X.size and X.min() >= 0:
        X = np.log1p(X)
    return X


def _second_differences(nx: int, ny: int):
    """Sparse operator whose squared norm is :func:`~.deform.bending` of an (nx, ny) grid (one coordinate)."""
    from scipy import sparse

    def d2(n):
        return sparse.diags([1.0, -2.0, 1.0], [0, 1, 2], shape=(n - 2, n)) if n > 2 else sparse.csr_matrix((0, n))

    def d1(n):
        return sparse.diags([-1.0, 1.0], [0, 1], shape=(n - 1, n))

    Ix, Iy = sparse.identity(nx), sparse.identity(ny)
    Dxx, Dyy, Dxy = sparse.kron(d2(nx), Iy), sparse.kron(Ix, d2(ny)), sparse.kron(d1(nx), d1(ny))
    parts = [D / math.sqrt(max(D.shape[0], 1)) * f for D, f in ((Dxx, 1.0), (Dyy, 1.0), (Dxy, math.sqrt(2.0)))]
    return sparse.vstack(parts).tocsr()


def solve_grid(grid: Deformation, x, r, w, *, bend: float = BEND, ridge: float = RIDGE) -> Deformation:
    """The grid whose displacement at input points ``x`` best matches ``r`` (n × 2, µm) in weighted
    least squares (weights ``w``), with ``bend`` × bending + ``ridge`` × mean c² (both relative to
    the mean data term), clipped to the bound. Returns a new :class:`Deformation`."""
    from scipy import sparse
    from scipy.sparse.linalg import spsolve

    nx, ny = grid.shape
    K = nx * ny
    wts, idx = grid.basis(x)
    n = len(x)
    S = sparse.csr_matrix((wts.ravel(), idx.ravel(), np.arange(0, 16 * n + 1, 16)), shape=(n, K))
    wsum = float(np.sum(w))
    if wsum <= 0:
        return Deformation(grid.origin, grid.spacing, np.zeros_like(grid.coef), grid.max_disp_um, grid.enabled)
    W = sparse.diags(np.asarray(w, dtype=np.float64) / wsum)
    D = _second_differences(nx, ny)
    A = (S.T @ W @ S + bend * (D.T @ D) + (ridge / K) * sparse.identity(K)).tocsc()
    rhs = S.T @ (W @ np.asarray(r, dtype=np.float64))
    c = np.column_stack([spsolve(A, rhs[:, j]) for j in range(2)]).reshape(nx, ny, 2)
    c = np.clip(c, -grid.max_disp_um, grid.max_disp_um)
    return Deformation(grid.origin, grid.spacing, c, grid.max_disp_um, grid.enabled)


def _peak_targets(p, q, Fp, Fq, tree_q, radius: float, k: int = 24):
    """For each point of ``p``: the best-correlated point of ``q`` within ``radius`` (of its ``k``
    nearest) and the weight max(correlation, 0) (0 where none lies within the radius)."""
    d, j = tree_q.query(p, k=min(k, len(q)))
    d, j = d.reshape(len(p), -1), j.reshape(len(p), -1)
    corr = np.einsum("nkf,nf->nk", Fq[j], Fp)
    corr = np.where(d <= radius, corr, -np.inf)
    b = corr.argmax(axis=1)
    r = np.arange(len(p))
    best = corr[r, b]
    return q[j[r, b]], np.where(np.isfinite(best), np.clip(best, 0, None), 0.0)


def match_deformations(stack, reference: int, *, sweeps: int = SWEEPS, bend: float = BEND,
                       max_cells: int = 3000, seed: int = 0, should_stop=None) -> list:
    """Expression-matched deformations of every section but ``reference`` (their transforms as set
    in ``stack``); returns per section a :class:`Deformation` (None for the reference).

    Split-half safeguard: each section's cells are split at random into two halves and the grids
    are fitted on each half alone (``a``, ``b``); per section the mean grid is kept, shrunk by its
    reliability ``max(0, 1 − |a − b|² / |a + b|²)`` (the share of the fitted displacement that both
    halves agree on): where the matches carry no consistent warp (noise), the grid is ~zero."""
    rng = np.random.default_rng(seed)
    halves = [[], []]
    for s in stack.sections:
        perm = rng.permutation(s.n_obs)
        for h in (0, 1):
            part = perm[h::2]
            halves[h].append(np.sort(part if len(part) <= max_cells else part[:max_cells]))
    ga = _match_once(stack, reference, halves[0], sweeps=sweeps, bend=bend, seed=seed, should_stop=should_stop)
    gb = _match_once(stack, reference, halves[1], sweeps=sweeps, bend=bend, seed=seed + 1, should_stop=should_stop)
    out = []
    for a, b in zip(ga, gb):
        if a is None:
            out.append(None)
            continue
        tot, diff = float(((a.coef + b.coef) ** 2).sum()), float(((a.coef - b.coef) ** 2).sum())
        rel = max(0.0, 1.0 - diff / tot) if tot > 0 else 0.0
        out.append(Deformation(a.origin, a.spacing, rel * 0.5 * (a.coef + b.coef), a.max_disp_um, a.enabled))
    return out


def _match_once(stack, reference: int, rows, *, sweeps: int, bend: float, seed: int, should_stop=None) -> list:
    """:func:`match_deformations` on the cells ``rows[k]`` of each section (no safeguard)."""
    from scipy.spatial import cKDTree

    from ..stack import apply_transform, estimate_spacing
    from .matching import pair_features

    n = len(stack)
    xin = [stack[k].xy_input[r] for k, r in enumerate(rows)]
    X = [_expression(stack, k)[r] for k, r in enumerate(rows)]
    feats = {}
    for k in range(n - 1):
        Fa, Fb, _ = pair_features(xin[k], X[k], xin[k + 1], X[k + 1], rng=np.random.default_rng([seed, k]))
        feats[(k, k + 1)], feats[(k + 1, k)] = (Fa, Fb), (Fb, Fa)
    grids = [None if k == reference else zero_grid(stack[k]) for k in range(n)]
    mats = [np.asarray(s.transform, dtype=np.float64) for s in stack.sections]
    h = float(np.median([estimate_spacing(x) for x in xin]))
    bound = max(g.max_disp_um for g in grids if g is not None) if n > 1 else 0.0

    def placed(k):
        x = xin[k] if grids[k] is None else grids[k].apply(xin[k])
        return apply_transform(mats[k], x)

    # search radius from a quarter of the bound (or 3 spacings) down to 1.5 spacings over the sweeps
    s0, s1 = max(3 * h, 0.25 * bound), 1.5 * h
    order = sorted((k for k in range(n) if k != reference), key=lambda k: abs(k - reference))
    for it in range(int(sweeps)):
        sigma = s1 * (s0 / s1) ** (1 - it / max(sweeps - 1, 1))
        for k in order:
            if should_stop is not None and should_stop():
                return grids
            p = placed(k)
            xs, ts, ws = [], [], []
            for j in (k - 1, k + 1):
                if not 0 <= j < n:
                    continue
                q = placed(j)
                Fp, Fq = feats[(k, j)]
                t, w = _peak_targets(p, q, Fp, Fq, cKDTree(q), sigma)
                xs.append(xin[k])
                ts.append(t)
                ws.append(w)
            x, t, w = np.concatenate(xs), np.concatenate(ts), np.concatenate(ws)
            Ainv = np.linalg.inv(mats[k][:2, :2])
            r = (t - mats[k][:2, 2]) @ Ainv.T - x  # the displacement (input frame) each target asks for
            grids[k] = solve_grid(grids[k], x, r, w, bend=bend)
    return grids


def iter_align_nonrigid(stack, reference=None, *, seed: int = 0, should_stop=None):
    """``align --method nonrigid`` as a generator (the Align widget's worker): the rigid alignment
    (:func:`~.sequence.iter_align_stack`, its ``(done, total, message)`` steps), then
    :func:`match_deformations`; returns the :class:`~.sequence.AlignResult` (``method="nonrigid"``)
    with ``deformations``. ``stack`` is left unchanged (the work is done on a copy of its
    transforms); ``result.apply(stack)`` writes the transforms and the grids."""
    import dataclasses

    from .sequence import iter_align_stack

    work = stack.select(range(len(stack))) if hasattr(stack, "select") else stack
    gen = iter_align_stack(work, reference, "rigid", seed=seed)
    total = 1
    while True:
        try:
            done, total, msg = next(gen)
        except StopIteration as stop:
            res = stop.value
            break
        yield done, total + 1, msg
    res.apply(work)
    yield total, total + 1, "fitting a smooth deformation per section"
    defs = match_deformations(work, res.reference, seed=seed, should_stop=should_stop)
    yield total + 1, total + 1, "done"
    return dataclasses.replace(res, method="nonrigid", deformations=defs)
