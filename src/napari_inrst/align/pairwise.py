"""Align one section onto another: expression-matched RANSAC, then expression-aware ICP.

1. Candidate matches: each spot's best-correlated partners (both ways) on the pair's joint PCA
   niche profiles (:mod:`.matching`).
2. RANSAC: two candidate matches fix a rigid (or similarity) motion; thousands of hypotheses
   are scored at once by the correlation-weighted number of candidate matches they bring within
   a tolerance. The best distinct hypotheses are refined on their inliers with :func:`kabsch`.
3. ICP (soft, symmetric, coarse to fine) on a subset: each spot is pulled to the mean of its
   nearest spots in the other section weighted by exp(−d²/2σ²)·max(correlation, 0), both ways;
   the motion is re-solved in closed form (weighted Kabsch) as σ shrinks from the RANSAC
   tolerance to half the spot spacing. Soft targets keep a regular spot lattice from locking onto
   a neighbouring row. Partial overlap: spots outside the other section's footprint carry no
   weight, targets near its edge are corrected for the inward pull of a one-sided neighbourhood,
   and spots without a similar partner carry ~none.
4. Mirror: steps 2–3 run on the section as given and flipped; each is scored (overlap ×
   expression agreement). Two close scores are both polished (5) before deciding; the flip is
   kept only when it scores clearly (``MIRROR_MARGIN``) better.
5. Polish (cells, not regular spot arrays) on all spots: expression-peak ICP (each spot paired
   with the best-correlated spot in a window of a few spacings, so the fit does not stop wherever
   soft ICP's slow convergence left it).
6. Correlation refinement (cells only, :mod:`.correlate`): a small bounded rigid update that
   maximizes the correlation of expression over all nearby cell pairs (Gaussian neighbourhood of
   ~3 cell spacings); the polish's one-partner-per-cell fit is off by a few µm per pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..stack import apply_transform, estimate_spacing
from .correlate import correlate_refine
from .icp import FOOTPRINT, icp, match_nearest, peak_icp
from .kabsch import kabsch
from .matching import candidate_matches, pair_features

FLIP = np.diag([-1.0, 1.0, 1.0])
MIRROR_MARGIN = 0.02  # a flip must beat the unflipped fit's score by this fraction to be kept
MIRROR_CLOSE = 0.25  # fits whose scores are this close (fraction) are both polished before deciding


@dataclass
class PairResult:
    matrix: np.ndarray  # 3×3: moving section's input coords → fixed section's input coords
    mirrored: bool
    residual_um: float  # median distance of matched spots after alignment
    score: float  # fit score (0–1): overlap × expression agreement
    score_flipped: float  # score of the other mirror choice
    n_matches: int
    features: tuple | None = None  # (Fa, Fb): the expression features of the final fit


def is_lattice(xy: np.ndarray) -> bool:
    """True for a regular spot array (ST, Visium: nearest-neighbour distances vary < 25 %),
    False for cells (≈ 40 %)."""
    from scipy.spatial import cKDTree

    d, _ = cKDTree(xy).query(xy[: min(len(xy), 2000)], k=2)
    d = d[:, 1]
    return bool(d.std() < 0.25 * d.mean())


def _two_point_transforms(a1, a2, b1, b2, similarity: bool):
    """Batch of motions mapping a1→b1, a2→b2 (arrays h×2). Returns (h×2×2 A, h×2 t, scale)."""
    va, vb = a2 - a1, b2 - b1
    ang = np.arctan2(vb[:, 1], vb[:, 0]) - np.arctan2(va[:, 1], va[:, 0])
    s = np.linalg.norm(vb, axis=1) / np.maximum(np.linalg.norm(va, axis=1), 1e-12)
    c, sn = np.cos(ang), np.sin(ang)
    R = np.stack([np.stack([c, -sn], -1), np.stack([sn, c], -1)], -2)
    sc = s if similarity else np.ones_like(s)
    A = R * sc[:, None, None]
    mid_a, mid_b = (a1 + a2) / 2, (b1 + b2) / 2
    t = mid_b - np.einsum("hij,hj->hi", A, mid_a)
    return A, t, s


def _inlier_score(A, t, pa, pb, w, tol):
    scores = np.empty(len(A))
    chunk = max(1, 4_000_000 // max(len(pa), 1))
    px, py = pa[:, 0][None], pa[:, 1][None]
    for s0 in range(0, len(A), chunk):
        a, tt = A[s0:s0 + chunk], t[s0:s0 + chunk]
        qx = a[:, 0, 0, None] * px + a[:, 0, 1, None] * py + tt[:, 0, None] - pb[:, 0][None]
        qy = a[:, 1, 0, None] * px + a[:, 1, 1, None] * py + tt[:, 1, None] - pb[:, 1][None]
        scores[s0:s0 + chunk] = ((qx * qx + qy * qy) < tol * tol) @ w
    return scores


def ransac(xa, xb, ia, ib, wc, *, tol: float, similarity: bool, rng, n_hyp: int = 3000, n_keep: int = 3):
    """Best distinct motions (3×3) from two-match hypotheses, scored by weighted inlier count."""
    m = len(ia)
    if m < 2:
        return []
    pa, pb = xa[ia], xb[ib]
    w = np.clip(wc, 0, None) + 1e-3
    prob = w / w.sum()
    h1 = rng.choice(m, n_hyp, p=prob)
    h2 = rng.choice(m, n_hyp, p=prob)
    a1, a2, b1, b2 = pa[h1], pa[h2], pb[h1], pb[h2]
    da = np.linalg.norm(a2 - a1, axis=1)
    db = np.linalg.norm(b2 - b1, axis=1)
    ok = (da > 3 * tol) & (db > 3 * tol)
    ratio = db / np.maximum(da, 1e-12)
    ok &= (ratio > 0.5) & (ratio < 2.0) if similarity else (np.abs(np.log(np.maximum(ratio, 1e-12))) < 0.2)
    if not ok.any():
        return []
    A, t, _ = _two_point_transforms(a1[ok], a2[ok], b1[ok], b2[ok], similarity)
    # score every hypothesis on a sample of the matches, the best 100 on all of them
    sub = rng.choice(m, min(m, 600), replace=False, p=prob) if m > 600 else np.arange(m)
    scores = _inlier_score(A, t, pa[sub], pb[sub], w[sub] * 0 + 1, tol)
    top = np.argsort(-scores)[:100]
    A, t = A[top], t[top]
    scores = _inlier_score(A, t, pa, pb, w, tol)
    order = np.argsort(-scores)
    out = []
    for h in order:
        M = np.eye(3)
        M[:2, :2], M[:2, 2] = A[h], t[h]
        # distinct from those kept: displaces the moving points by more than 2 tolerances
        moved = apply_transform(M, pa)
        if any(np.median(np.linalg.norm(moved - apply_transform(K, pa), axis=1)) < 2 * tol for K, _ in out):
            continue
        out.append((M, scores[h]))
        if len(out) >= n_keep:
            break
    # refine each on its inliers (closed form), twice
    refined = []
    for M, sc in out:
        for _ in range(2):
            d = np.linalg.norm(apply_transform(M, pa) - pb, axis=1)
            inl = d < tol
            if inl.sum() < 3:
                break
            M = kabsch(pa[inl], pb[inl], weights=w[inl], scale=similarity)
        refined.append(M)
    return refined


def fit_score(ya, xb, Fa, Fb, scale: float) -> float:
    """Symmetric mean over spots of max over near partners of exp(−d²/2s²)·max(corr, 0): 0–1."""
    from scipy.spatial import cKDTree

    def one(p, q, Fp, Fq):
        k = min(8, len(q))
        d, j = cKDTree(q).query(p, k=k)
        if k == 1:
            d, j = d[:, None], j[:, None]
        corr = np.einsum("nkf,nf->nk", Fq[j], Fp)
        g = np.exp(-0.5 * (d / scale) ** 2) * np.clip(corr, 0, None)
        return float(g.max(axis=1).mean())

    return 0.5 * (one(ya, xb, Fa, Fb) + one(xb, ya, Fb, Fa))


def matched_distances(ya, xb, Fa, Fb, h: float) -> np.ndarray:
    """Distance of each (moved) spot of a to its matched spot of b (µm).

    The match is the spot, among the 24 nearest, minimizing d²/(2h)² + 8·(1 − correlation): a near
    spot of similar expression. ``h`` is the spot spacing. Aligned sections give about the spot
    jitter; misaligned ones several spacings (the similar spots lie elsewhere).
    """
    from scipy.spatial import cKDTree

    _, d, _, _ = match_nearest(ya, xb, Fa, Fb, cKDTree(xb), k=24, sigma=2.0 * h, lam=8.0)
    return d


def align_pair(xa, Xa, xb, Xb, *, method: str = "rigid", rng=None, max_spots: int = 2500,
               max_polish: int = 8000, allow_mirror: bool = True, name_a: str = "moving",
               name_b: str = "fixed", features=None) -> PairResult:
    """Motion (3×3) mapping section a's coordinates onto section b's.

    ``xa``, ``xb``: n×2 coordinates (µm); ``Xa``, ``Xb``: normalized expression on the same genes.
    ``method``: ``"rigid"`` or ``"similarity"``.

    Two passes (:mod:`.matching` notes): the first on features centred on the pair's pooled mean
    (unbiased when the sections cover different parts of the tissue) finds the overlap; the
    second, on features with each section centred on its spots in that overlap (which also
    removes a shift common to all spots of one section: batch, a gradient along z), is the fit.
    ``features=(Fa, Fb)`` (from :func:`~napari_inrst.align.matching.pair_features`) skips the
    first pass and uses them as given.
    """
    from ..errors import InputError

    rng = np.random.default_rng(0) if rng is None else rng
    xa = np.asarray(xa, dtype=np.float64)
    xb = np.asarray(xb, dtype=np.float64)
    kw = dict(similarity=method == "similarity", rng=rng, max_spots=max_spots, max_polish=max_polish,
              allow_mirror=allow_mirror, name_a=name_a, name_b=name_b)

    def no_genes(n):
        return InputError(f"{name_a}, {name_b}", f"only {n} genes are expressed in both sections; "
                                                 "alignment needs at least 3 shared genes")

    if features is None:
        Xa = np.asarray(Xa, dtype=np.float64)
        Xb = np.asarray(Xb, dtype=np.float64)
        pooled = (Xa.sum(axis=0) + Xb.sum(axis=0)) / (len(Xa) + len(Xb))
        Fa, Fb, n_genes = pair_features(xa, Xa, xb, Xb, rng=rng, centres=(pooled, pooled))
        if Fa is None:
            raise no_genes(n_genes)
        first = _fit_pair(xa, xb, Fa, Fb, polish=False, **kw)
        from scipy.spatial import cKDTree

        ya = apply_transform(first.matrix, xa)
        in_a = cKDTree(xb).query(ya)[0] < FOOTPRINT * estimate_spacing(xb)
        in_b = cKDTree(ya).query(xb)[0] < FOOTPRINT * estimate_spacing(xa)
        if min(in_a.sum(), in_b.sum()) >= 10:
            Fa, Fb, _ = pair_features(xa, Xa, xb, Xb, rng=rng,
                                      centres=(Xa[in_a].mean(axis=0), Xb[in_b].mean(axis=0)))
    else:
        (Fa, Fb) = features
        if Fa is None:
            raise no_genes("fewer than 3")
    res = _fit_pair(xa, xb, Fa, Fb, **kw)
    res.features = (Fa, Fb)
    return res


def _fit_pair(xa, xb, Fa, Fb, *, similarity: bool, rng, max_spots: int, max_polish: int,
              allow_mirror: bool, name_a: str, name_b: str, polish: bool = True) -> PairResult:
    """Steps 2–5 of the module notes on the given features (without 5 unless ``polish``)."""
    from ..errors import InputError

    def sub(n, m):
        return np.sort(rng.choice(n, m, replace=False)) if n > m else np.arange(n)

    h = max(estimate_spacing(xa), estimate_spacing(xb))  # spot spacing (µm)
    extent = float(np.sqrt(((xb - xb.mean(0)) ** 2).sum(1).mean()))  # RMS radius of b
    tol = max(2.5 * h, 0.06 * extent)
    # three nested subsets: correlation matching (≤1500), hypothesis ICP (≤700), final ICP (≤max_spots)
    sa, sb = sub(len(xa), max_spots), sub(len(xb), max_spots)
    xa_s, xb_s, Fa_s, Fb_s = xa[sa], xb[sb], Fa[sa], Fb[sb]
    ma, mb = sub(len(sa), 1500), sub(len(sb), 1500)
    ia, ib, corr = candidate_matches(Fa_s[ma], Fb_s[mb], k=3)
    ca, cb = xa_s[ma][ia], xb_s[mb][ib]
    qa, qb = sub(len(sa), 700), sub(len(sb), 700)
    hq = max(estimate_spacing(xa_s[qa]), estimate_spacing(xb_s[qb]))

    results = []
    for flip in ([False, True] if allow_mirror else [False]):
        Fm = FLIP if flip else np.eye(3)
        pa = apply_transform(Fm, xa_s)
        hyps = ransac(apply_transform(Fm, ca), cb, np.arange(len(ca)), np.arange(len(cb)), corr,
                      tol=tol, similarity=similarity, rng=rng)
        M_c = np.eye(3)  # a centroid-matching start as well (small motions, few matches)
        M_c[:2, 2] = xb_s.mean(0) - pa.mean(0)
        best = None
        for M0 in hyps + [M_c]:
            M = icp(pa[qa], xb_s[qb], Fa_s[qa], Fb_s[qb], M0, sigma0=tol, sigma1=0.5 * hq,
                    similarity=similarity, n_iter=30)
            if similarity and not 0.5 < np.sqrt(abs(np.linalg.det(M[:2, :2]))) < 2.0:
                continue
            sc = fit_score(apply_transform(M, pa[qa]), xb_s[qb], Fa_s[qa], Fb_s[qb], scale=hq)
            if best is None or sc > best[1]:
                best = (M, sc)
        if best is None:
            continue
        M = icp(pa, xb_s, Fa_s, Fb_s, best[0], sigma0=max(2 * h, hq), sigma1=0.5 * h,
                similarity=similarity, n_iter=30)
        sc = fit_score(apply_transform(M, pa), xb_s, Fa_s, Fb_s, scale=h)
        results.append((flip, M @ Fm, sc))
    if not results:
        raise InputError(f"{name_a}, {name_b}", "no consistent alignment found between these sections")
    # Irregular layouts (single cells) are polished on all spots (up to max_polish) by
    # expression-peak ICP. There soft ICP alone stops wherever its slow
    # convergence leaves it (±2° between MERFISH sections, depending on the start), and polishing
    # on a subset made the result vary by ~10 µm with the random draw. On regular spot lattices
    # soft ICP converges, and a peak step would follow the anatomy's drift between sections.
    pa_, pb_ = sub(len(xa), max_polish), sub(len(xb), max_polish)
    xb_p, Fa_p, Fb_p = xb[pb_], Fa[pa_], Fb[pb_]
    lattice = is_lattice(xa) and is_lattice(xb)

    def polished(flip, M, score):
        if lattice or not polish:
            return flip, M, score
        Fm = FLIP if flip else np.eye(3)
        xa_p = apply_transform(Fm, xa[pa_])
        hp = max(estimate_spacing(xa_p), estimate_spacing(xb_p))
        M = M @ Fm  # Fm is its own inverse
        M = peak_icp(xa_p, xb_p, Fa_p, Fb_p, M, radius0=4 * hp, radius1=2 * hp, similarity=similarity)
        return flip, M @ Fm, fit_score(apply_transform(M, xa_p), xb_p, Fa_p, Fb_p, scale=hp)

    results.sort(key=lambda r: -r[2])
    if len(results) == 2 and results[1][2] > results[0][2] / (1 + MIRROR_CLOSE):
        # close: polish both and keep the flip only when it fits clearly better
        unflipped, flipped = sorted((polished(*r) for r in results), key=lambda r: r[0])
        better = flipped[2] > unflipped[2] * (1 + MIRROR_MARGIN)
        chosen, other = (flipped, unflipped) if better else (unflipped, flipped)
    else:
        chosen, other = polished(*results[0]), (results[1] if len(results) == 2 else None)
    M = chosen[1]
    if polish and not lattice:  # cells: the correlation of all nearby pairs settles the fit (step 6)
        M, _ = correlate_refine(xa[pa_], xb_p, Fa_p, Fb_p, M)
    if not polish:  # the first pass: only its motion is used (to find the overlap)
        return PairResult(matrix=M, mirrored=bool(chosen[0]), residual_um=float("nan"), score=float(chosen[2]),
                          score_flipped=float(other[2]) if other else float("nan"), n_matches=0)
    d = matched_distances(apply_transform(M, xa_s), xb_s, Fa_s, Fb_s, h)
    return PairResult(matrix=M, mirrored=bool(chosen[0]), residual_um=float(np.median(d)),
                      score=float(chosen[2]), score_flipped=float(other[2]) if other else float("nan"),
                      n_matches=int(len(d)))
