"""Normalization and gene selection of expression matrices (numpy; no Qt, no torch)."""

from __future__ import annotations

import numpy as np

TARGET_SUM = 1e4


def as_dense(X) -> np.ndarray:
    """Dense float32 of a dense or sparse matrix."""
    return np.asarray(X.toarray() if hasattr(X, "toarray") else X, dtype=np.float32)


def dense_rows(X, scale=None, block: int = 4096) -> np.ndarray:
    """Dense float32 of a dense or sparse matrix, ``log1p(X × scale)`` per row when ``scale`` (n,)
    is given; built in blocks of rows, so that a worker building a large stack lets go of the
    interpreter lock between blocks (scipy's ``toarray`` holds it: 0.9 s for 200,000 × 300 here) and
    the UI thread is never kept waiting long."""
    out = np.empty(X.shape, dtype=np.float32)
    for r in range(0, X.shape[0], block):
        x = as_dense(X[r:r + block])
        if scale is not None:
            x = x * np.asarray(scale[r:r + block], dtype=np.float32)[:, None]
            np.log1p(x, out=x)
        out[r:r + block] = x
    return out


def normalize_log1p(X, target_sum: float = TARGET_SUM) -> np.ndarray:
    """``log1p`` of counts per ``target_sum`` (10,000 by default), per cell/spot; dense float32."""
    X = as_dense(X)
    tot = X.sum(axis=1, keepdims=True)
    scale = np.divide(target_sum, tot, out=np.zeros_like(tot), where=tot > 0)
    return np.log1p(X * scale).astype(np.float32)


def _mean_var(X, block: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and variance (ddof 1) in float64, accumulated over row blocks (no float64
    copy of ``X``: a large subsample stays at its own size in memory)."""
    n = X.shape[0]
    s1 = np.zeros(X.shape[1])
    for r in range(0, n, block):
        s1 += np.asarray(X[r:r + block]).sum(axis=0, dtype=np.float64)
    mean = s1 / max(n, 1)
    ss = np.zeros(X.shape[1])
    for r in range(0, n, block):
        d = np.asarray(X[r:r + block], dtype=np.float64) - mean
        ss += (d * d).sum(axis=0)
    var = ss / (n - 1) if n > 1 else np.zeros_like(mean)
    return mean, var


def highly_variable_genes(X: np.ndarray, n_top: int, n_bins: int = 20) -> np.ndarray:
    """Indices of the ``n_top`` most variable genes of log-normalized ``X``, in their original order.

    Dispersion (variance / mean) normalized robustly (median / MAD, as scanpy's ``cell_ranger``
    flavour) within bins of mean expression, so a few very variable genes do not hide each other.
    """
    n_top = int(min(n_top, X.shape[1]))
    mean, var = _mean_var(X)
    disp = np.log(np.divide(var, mean, out=np.zeros_like(var), where=mean > 1e-12) + 1e-12)
    disp[mean <= 1e-12] = -np.inf
    n_bins = int(max(1, min(n_bins, X.shape[1] // 10)))  # ≥ ~10 genes per bin
    edges = np.quantile(mean, np.linspace(0, 1, n_bins + 1))
    bins = np.clip(np.searchsorted(edges, mean, side="right") - 1, 0, n_bins - 1)
    norm = np.full_like(disp, -np.inf)
    for b in np.unique(bins):
        idx = (bins == b) & np.isfinite(disp)
        if idx.sum() == 0:
            continue
        d = disp[idx]
        med = np.median(d)
        mad = 1.4826 * np.median(np.abs(d - med))
        norm[idx] = (d - med) / mad if mad > 0 else d - med
    order = np.lexsort((-var, -norm))  # by normalized dispersion, ties by variance
    return np.sort(order[:n_top])
