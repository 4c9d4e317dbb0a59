"""Expression features shared by a pair of sections, and expression-based spot matching.

A pair's spots are described on one low-dimensional representation: PCA of the normalized
expression of the genes both sections express, computed jointly for the pair and centred per
section (``centres``). Centring each section on its own mean hides a shift common to all its
spots (batch, a gradient along z), but when the sections cover different parts of the tissue
their means also differ for a real reason, and that biases every match towards the overlap (a
30 % crop moved the fit by ~2 spot spacings). So the pair fit
(:func:`~napari_inrst.align.pairwise.align_pair`) first centres both on their pooled mean to find
the overlap, then each on the mean of its spots in the overlap. Single spots are noisy, so each
spot is also described by the mean of its spatial neighbourhood ("niche" profile; rotation and
mirror invariant). Matching uses the Pearson
correlation of these profiles (INRScrecon §3.1).
"""

from __future__ import annotations

import numpy as np

from ..stack.linalg import top_eigen

MAX_PCA_ROWS = 4000
MAX_PCA_GENES = 2000


def expressed_genes(Xa: np.ndarray, Xb: np.ndarray) -> np.ndarray:
    """Indices of genes with some expression (non-constant) in both sections."""
    va = np.asarray(Xa).std(axis=0) > 0
    vb = np.asarray(Xb).std(axis=0) > 0
    return np.flatnonzero(va & vb)


def joint_pca(Xa: np.ndarray, Xb: np.ndarray, genes: np.ndarray, n_comp: int = 30, rng=None, centres=None):
    """Scores of both sections on a PCA of their shared genes, fitted jointly (na×k, nb×k).

    Each section is centred on its own mean, or on ``centres=(ca, cb)`` (per-gene vectors over
    all genes of ``Xa``/``Xb``: e.g. the means over the spots in the overlap).
    """
    rng = np.random.default_rng(0) if rng is None else rng
    # single precision for the large products (the features need ~3 digits); sums in double
    A = np.asarray(Xa)[:, genes].astype(np.float32)
    B = np.asarray(Xb)[:, genes].astype(np.float32)
    if centres is None:
        ca, cb = A.mean(axis=0, dtype=np.float64), B.mean(axis=0, dtype=np.float64)
    else:
        ca, cb = (np.asarray(c, dtype=np.float64)[genes] for c in centres)
    A -= ca.astype(np.float32)
    B -= cb.astype(np.float32)
    if A.shape[1] > MAX_PCA_GENES:  # most variable genes of the pair
        var = np.concatenate([A, B]).var(axis=0, dtype=np.float64)
        keep = np.sort(np.argsort(-var)[:MAX_PCA_GENES])
        A, B = A[:, keep], B[:, keep]
    Z = np.concatenate([A, B])
    sd = Z.std(axis=0, dtype=np.float64)
    floor = np.median(sd[sd > 0]) if np.any(sd > 0) else 1.0
    sd = np.maximum(sd, floor).astype(np.float32)  # scale genes, but do not inflate the weakest ones
    A, B, Z = A / sd, B / sd, Z / sd
    fit = Z if len(Z) <= MAX_PCA_ROWS else Z[rng.choice(len(Z), MAX_PCA_ROWS, replace=False)]
    k = int(max(2, min(n_comp, fit.shape[1], fit.shape[0] - 1)))
    V = _top_components(fit, k, rng).astype(np.float32)
    return (A @ V).astype(np.float64), (B @ V).astype(np.float64)


def _top_components(Z: np.ndarray, k: int, rng, n_power: int = 6) -> np.ndarray:
    """Top-``k`` right singular vectors of ``Z`` (genes × k) by subspace iteration on the smaller
    Gram matrix (ZᵀZ or ZZᵀ); see :mod:`napari_inrst.stack.linalg`."""
    m, g = Z.shape
    genes_side = g <= m
    C = Z.T @ Z if genes_side else Z @ Z.T  # d × d, d = min(m, g)
    w, E = top_eigen(C.astype(np.float64), k, rng, n_power)  # top eigenvectors of C
    if genes_side:
        return E
    return (Z.T @ E.astype(Z.dtype)).astype(np.float64) / np.sqrt(np.maximum(w, 1e-12))


def neighbourhood_mean(xy: np.ndarray, F: np.ndarray, k: int) -> np.ndarray:
    """Mean of ``F`` over each point's ``k`` nearest spatial neighbours (itself included)."""
    from scipy.spatial import cKDTree

    k = int(min(max(k, 1), len(xy)))
    if k == 1:
        return F.copy()
    _, idx = cKDTree(xy).query(xy, k=k)
    return F[idx].mean(axis=1)


def unit_rows(F: np.ndarray) -> np.ndarray:
    """Rows centred and scaled to unit norm, so dot products are Pearson correlations."""
    F = F - F.mean(axis=1, keepdims=True)
    n = np.linalg.norm(F, axis=1, keepdims=True)
    return F / np.where(n > 0, n, 1.0)


def smoothing_k(n: int) -> int:
    """Neighbourhood size for niche profiles: ~1 ring on small spot arrays, more for dense cells."""
    return int(np.clip(round(n / 150), 7, 30))


def pair_features(xa, Xa, xb, Xb, *, n_comp: int = 30, rng=None, centres=None):
    """Unit-norm niche profiles of both sections (for correlation matching) and the gene count.
    ``centres``: see :func:`joint_pca`.

    Returns ``(Fa, Fb, n_genes)``; each row is the concatenation of the spot's own profile
    (weight 1/3) and its neighbourhood mean (weight 2/3), centred and normalized.
    """
    genes = expressed_genes(Xa, Xb)
    if len(genes) < 3:
        return None, None, len(genes)
    Pa, Pb = joint_pca(Xa, Xb, genes, n_comp=n_comp, rng=rng, centres=centres)
    Sa = neighbourhood_mean(xa, Pa, smoothing_k(len(xa)))
    Sb = neighbourhood_mean(xb, Pb, smoothing_k(len(xb)))
    Fa = np.concatenate([np.sqrt(1 / 3) * unit_rows(Pa), np.sqrt(2 / 3) * unit_rows(Sa)], axis=1)
    Fb = np.concatenate([np.sqrt(1 / 3) * unit_rows(Pb), np.sqrt(2 / 3) * unit_rows(Sb)], axis=1)
    return unit_rows(Fa), unit_rows(Fb), len(genes)


def candidate_matches(Fa: np.ndarray, Fb: np.ndarray, k: int = 3):
    """Best-correlated partners both ways: arrays (ia, ib, corr) of the union of the top-``k`` lists."""
    C = Fa @ Fb.T
    k = int(min(k, C.shape[0], C.shape[1]))
    top_b = np.argpartition(-C, k - 1, axis=1)[:, :k]
    top_a = np.argpartition(-C, k - 1, axis=0)[:k, :]
    ia = np.concatenate([np.repeat(np.arange(C.shape[0]), k), top_a.ravel()])
    ib = np.concatenate([top_b.ravel(), np.tile(np.arange(C.shape[1]), k)])
    key = np.unique(ia.astype(np.int64) * C.shape[1] + ib)
    ia, ib = key // C.shape[1], key % C.shape[1]
    return ia, ib, C[ia, ib]
