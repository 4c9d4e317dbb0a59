"""Fitting the per-section deformations of :mod:`.deform` (the grids start at zero = identity).

Two ways, both on top of the rigid transforms (which they leave unchanged), the reference fixed:

* :func:`match_deformations` — expression-matched (``napari-inrst align --method nonrigid``):
  every cell of a section is pulled towards
    the best-correlated cell within a radius in each adjacent section (expression peaks, as the
  rigid polish; the radius shrinks from a quarter of the bound to 1.5 spacings over the sweeps), and each section's grid is solved in closed form (weighted least squares,
  bending penalty, small ridge, then clipped to the bound) against those targets; sections are
  updated in turn (the reference never moves) for a few sweeps. No torch.
* :func:`deform_sections` — field-driven (``fit --deform``, through
  :func:`napari_inrst.field.refine.refine_stack`): the grids of the listed sections are optimized
  through a frozen field's latent and gene decoder (torch), as the refinement optimizes rigid
  parameters: the error of the field at the section's cells plus ``smooth`` × bending ÷ bound²,
  the control displacements ``bound · tanh(raw)``; per section the best step is kept, and a grid
  whose error did not go down is left as it was.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .deform import Deformation, bending

#: Adam steps of the field-driven grid optimization per round
STEPS = 60
LR = 0.05
#: weight of bending ÷ bound² against the field's error (target space)
SMOOTH = 0.02
MAX_CELLS = 2500
#: expression-matched fit: sweeps over the sections, bending weight (relative), ridge (relative)
SWEEPS = 6
BEND = 0.003
RIDGE = 1e-4


def _zero_grid(section) -> Deformation:
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
    in ``stack``); returns per section a :class:`Deformation` (None for the reference)."""
    from scipy.spatial import cKDTree

    from .matching import pair_features
    from .pairwise import spacing

    n = len(stack)
    rng = np.random.default_rng(seed)
    rows = [np.arange(s.n_obs) if s.n_obs <= max_cells else np.sort(rng.choice(s.n_obs, max_cells, replace=False))
            for s in stack.sections]
    xin = [stack[k].xy_input[r] for k, r in enumerate(rows)]
    X = [_expression(stack, k)[r] for k, r in enumerate(rows)]
    feats = {}
    for k in range(n - 1):
        Fa, Fb, _ = pair_features(xin[k], X[k], xin[k + 1], X[k + 1], rng=np.random.default_rng([seed, k]))
        feats[(k, k + 1)], feats[(k + 1, k)] = (Fa, Fb), (Fb, Fa)
    grids = [None if k == reference else _zero_grid(stack[k]) for k in range(n)]
    mats = [np.asarray(s.transform, dtype=np.float64) for s in stack.sections]
    h = float(np.median([spacing(x) for x in xin]))
    bound = max(g.max_disp_um for g in grids if g is not None) if n > 1 else 0.0

    def placed(k):
        x = xin[k] if grids[k] is None else grids[k].apply(xin[k])
        return x @ mats[k][:2, :2].T + mats[k][:2, 2]

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


# --- field-driven --------------------------------------------------------------------------------

def deform_sections(model, stack, sections: Sequence[int], *, steps: int = STEPS, lr: float = LR,
                    smooth: float = SMOOTH, max_cells: int = MAX_CELLS, seed: int = 0) -> tuple[list, list, list]:
    """Optimize the deformation grids of ``stack.sections[k] for k in sections`` (their current
    grid, or a zero one) against the frozen field ``model``; transforms unchanged. Returns
    ``(grids, loss_before, loss_after)`` per listed section."""
    import torch

    sections = list(sections)
    if not sections:
        return [], [], []
    rng = np.random.default_rng(seed)
    net, dev, o = model.net, model.device, model.origin
    was = [p.requires_grad for p in net.parameters()]
    for p in net.parameters():
        p.requires_grad_(False)
    f32 = dict(dtype=torch.float32, device=dev)
    items, raws = [], []
    for k in sections:
        s = stack.sections[k]
        g = getattr(s, "deformation", None) or _zero_grid(s)
        r = np.arange(s.n_obs) if s.n_obs <= max_cells else np.sort(rng.choice(s.n_obs, max_cells, replace=False))
        x = s.xy_input[r]
        X = np.asarray(s.X[r], dtype=np.float32)
        wts, idx = g.basis(x)
        M = np.asarray(s.transform, dtype=np.float64)
        m = max(g.max_disp_um, 1e-9)
        items.append(dict(grid=g, m=m, x=torch.as_tensor(x - x.mean(0), **f32), c=x.mean(0),
                          w=torch.as_tensor(wts, **f32), idx=torch.as_tensor(idx, dtype=torch.long, device=dev),
                          A=torch.as_tensor(M[:2, :2], **f32),
                          t=torch.as_tensor(M[:2, :2] @ x.mean(0) + M[:2, 2] - o[:2], **f32),
                          z=torch.full((len(x), 1), float(s.z - o[2]), **f32),
                          T=torch.as_tensor((X - model.mean) / model.std, **f32)))
        raws.append(torch.as_tensor(np.arctanh(np.clip(g.coef / m, -0.999, 0.999)), **f32).requires_grad_(True))

    def losses():
        out = []
        for it, raw in zip(items, raws):
            c = it["m"] * torch.tanh(raw)
            disp = (it["w"][..., None] * c.reshape(-1, 2)[it["idx"]]).sum(1)
            xy = (it["x"] + disp) @ it["A"].T + it["t"]
            pred = net.decoder(net.latent(torch.cat([xy, it["z"]], dim=1)))
            out.append(((pred - it["T"]) ** 2).mean() + smooth * bending(c) / it["m"] ** 2)
        return torch.stack(out)

    opt = torch.optim.Adam(raws, lr=lr)
    try:
        with torch.no_grad():
            before = losses().cpu().numpy().astype(float)
        best = before.copy()
        best_raw = [r.detach().clone() for r in raws]
        for i in range(int(steps) + 1):
            for gr in opt.param_groups:
                gr["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * i / max(steps, 1))))
            opt.zero_grad(set_to_none=True)
            L = losses()
            cur = L.detach().cpu().numpy().astype(float)
            for j in np.flatnonzero(cur < best):
                best[j], best_raw[j] = cur[j], raws[j].detach().clone()
            if i == int(steps):
                break
            L.sum().backward()
            opt.step()
    finally:
        for p, w in zip(net.parameters(), was):
            p.requires_grad_(w)
    grids = []
    for j, it in enumerate(items):
        g = it["grid"]
        if not best[j] < before[j]:
            grids.append(g)
            continue
        c = it["m"] * np.tanh(best_raw[j].cpu().numpy().astype(np.float64))
        grids.append(Deformation(g.origin, g.spacing, c, g.max_disp_um, g.enabled))
    return grids, list(before), list(best)
