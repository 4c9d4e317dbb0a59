"""Quality metrics of predicted expression against what was measured (numpy; no Qt).

All functions take ``truth`` and ``pred`` as (n cells/spots × genes) arrays in the same space
(the stack's normalized values) and, where spatial, the cells' (x, y) in µm. Definitions follow
``docs/EVALUATION.md``:

* :func:`pearson_per_gene` – correlation across cells for each gene, averaged over genes whose
  truth has non-zero variance (a constant prediction of a varying gene scores 0).
* :func:`binned_pearson` – the same on square bins of ``bin_um`` µm: mean of the held-out cells
  in each bin with ≥ ``min_cells`` cells, the prediction averaged over the same cells.
* :func:`rmse` – root mean squared error over all cells and genes.
* :func:`ssim_per_gene` – scikit-image SSIM per gene on rasterized images (one grid for truth
  and prediction, tissue mask from the measured positions, normalized Gaussian smoothing of
  σ = 1 bin for single-cell data), averaged over the tissue mask, then over genes.
* :func:`adjusted_rand_score` – ARI (own numpy implementation) and :class:`LabelClassifier`,
  a multinomial logistic regression (torch, L-BFGS, standardized genes) that turns expression
  into domain labels.
* :func:`top_expressed_genes` – the N most expressed genes (for sparse counts).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Below this median nearest-neighbour spacing (µm) data count as single-cell (MERFISH, Xenium…)
SINGLE_CELL_SPACING_UM = 30.0


def _as2d(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a[:, None] if a.ndim == 1 else a


def _check(truth, pred):
    t, p = _as2d(truth), _as2d(pred)
    if t.shape != p.shape:
        raise ValueError(f"truth {t.shape} and prediction {p.shape} differ in shape")
    return t, p


def pearson_each(truth, pred) -> np.ndarray:
    """Per-gene Pearson r across rows; NaN where the truth is constant, 0 where only the prediction is."""
    t, p = _check(truth, pred)
    tc = t - t.mean(axis=0)
    pc = p - p.mean(axis=0)
    st = np.sqrt((tc ** 2).sum(axis=0))
    sp = np.sqrt((pc ** 2).sum(axis=0))
    num = (tc * pc).sum(axis=0)
    tol_t = 1e-12 * np.maximum(1.0, np.abs(t).max(axis=0)) * np.sqrt(len(t))
    r = np.full(t.shape[1], np.nan)
    ok = st > tol_t
    with np.errstate(invalid="ignore", divide="ignore"):
        r[ok] = np.where(sp[ok] > 0, num[ok] / (st[ok] * np.maximum(sp[ok], 1e-300)), 0.0)
    return np.clip(r, -1.0, 1.0)


def pearson_per_gene(truth, pred) -> float:
    """Mean per-gene Pearson over genes with non-zero variance in the truth (NaN if none)."""
    r = pearson_each(truth, pred)
    r = r[np.isfinite(r)]
    return float(r.mean()) if len(r) else float("nan")


def bin_ids(xy, bin_um: float, origin=None) -> np.ndarray:
    """Integer id of the square bin of side ``bin_um`` each (x, y) falls in (grid anchored at ``origin``,
    the minimum of ``xy`` by default)."""
    xy = np.asarray(xy, dtype=np.float64)
    origin = xy.min(axis=0) if origin is None else np.asarray(origin, dtype=np.float64)
    ij = np.floor((xy - origin) / float(bin_um)).astype(np.int64)
    ij -= ij.min(axis=0)
    return ij[:, 0] * (int(ij[:, 1].max()) + 1) + ij[:, 1]


def binned(xy, truth, pred, bin_um: float, min_cells: int = 3):
    """(truth, pred) averaged per bin of ``bin_um`` µm over the bins with ≥ ``min_cells`` cells."""
    t, p = _check(truth, pred)
    ids = bin_ids(xy, bin_um)
    uniq, inv, cnt = np.unique(ids, return_inverse=True, return_counts=True)
    keep = cnt >= min_cells
    st = np.zeros((len(uniq), t.shape[1]))
    sp = np.zeros_like(st)
    np.add.at(st, inv, t)
    np.add.at(sp, inv, p)
    st /= cnt[:, None]
    sp /= cnt[:, None]
    return st[keep], sp[keep]


def binned_pearson(xy, truth, pred, bin_um: float, min_cells: int = 3) -> float:
    """Per-gene Pearson on ``bin_um`` µm bins (see :func:`binned`); NaN if fewer than 3 bins."""
    bt, bp = binned(xy, truth, pred, bin_um, min_cells)
    if len(bt) < 3:
        return float("nan")
    return pearson_per_gene(bt, bp)


def rmse(truth, pred) -> float:
    """Root mean squared error over all cells and genes."""
    t, p = _check(truth, pred)
    return float(np.sqrt(np.mean((t - p) ** 2)))


def rmse_each(truth, pred) -> np.ndarray:
    """Per-gene RMSE."""
    t, p = _check(truth, pred)
    return np.sqrt(np.mean((t - p) ** 2, axis=0))


def is_single_cell(xy) -> bool:
    """True when the positions are denser than spot arrays (median neighbour spacing < 30 µm)."""
    from ..stack import estimate_spacing

    return estimate_spacing(np.asarray(xy, dtype=np.float64)) < SINGLE_CELL_SPACING_UM


@dataclass
class Raster:
    """A grid over one section's positions: pixel of each cell, tissue mask, smoothing."""

    rows: np.ndarray  # pixel row (y) of each cell
    cols: np.ndarray  # pixel column (x) of each cell
    shape: tuple[int, int]
    mask: np.ndarray  # bool image: pixels holding at least one measured position
    sigma: float  # Gaussian σ in pixels (0: none)
    bin_um: float

    @classmethod
    def from_positions(cls, xy, bin_um: float | None = None, single_cell: bool | None = None) -> "Raster":
        """Grid of ``bin_um`` µm pixels over ``xy``. Default bin: the spot pitch for spot data,
        twice the median cell spacing for single-cell data (smoothed with σ = 1 bin)."""
        from ..stack import estimate_spacing

        xy = np.asarray(xy, dtype=np.float64)
        spacing = estimate_spacing(xy)
        if single_cell is None:
            single_cell = spacing < SINGLE_CELL_SPACING_UM
        if bin_um is None:
            bin_um = 2.0 * spacing if single_cell else spacing
        lo = xy.min(axis=0)
        ij = np.floor((xy - lo) / bin_um + (0.0 if single_cell else 0.5)).astype(np.int64)
        shape = (int(ij[:, 1].max()) + 1, int(ij[:, 0].max()) + 1)
        mask = np.zeros(shape, dtype=bool)
        mask[ij[:, 1], ij[:, 0]] = True
        return cls(ij[:, 1], ij[:, 0], shape, mask, 1.0 if single_cell else 0.0, float(bin_um))

    def image(self, values) -> np.ndarray:
        """(n,) or (n, g) values → (H, W) or (g, H, W) image: mean per pixel (normalized Gaussian
        smoothing when ``sigma`` > 0), 0 outside the tissue mask."""
        v = np.asarray(values, dtype=np.float64)
        one = v.ndim == 1
        v = v[:, None] if one else v
        g = v.shape[1]
        flat = self.rows * self.shape[1] + self.cols
        npx = self.shape[0] * self.shape[1]
        s = np.zeros((npx, g))
        np.add.at(s, flat, v)
        c = np.bincount(flat, minlength=npx).astype(np.float64)
        s = s.T.reshape(g, *self.shape)
        c = c.reshape(self.shape)
        if self.sigma > 0:
            from scipy.ndimage import gaussian_filter

            s = gaussian_filter(s, sigma=(0, self.sigma, self.sigma), mode="constant")
            c = gaussian_filter(c, sigma=self.sigma, mode="constant")
        img = np.divide(s, c[None], out=np.zeros_like(s), where=c[None] > 1e-9)
        img[:, ~self.mask] = 0.0
        return img[0] if one else img


def _win(shape) -> int:
    w = min(7, *shape)
    return w if w % 2 == 1 else w - 1


def ssim_each(xy, truth, pred, *, bin_um: float | None = None, single_cell: bool | None = None,
              raster: Raster | None = None) -> np.ndarray:
    """Per-gene SSIM of rasterized truth vs prediction, averaged over the tissue mask.

    ``data_range`` per gene is the range of the truth image in the mask; genes with a constant
    truth image get NaN.
    """
    from skimage.metrics import structural_similarity

    t, p = _check(truth, pred)
    r = raster or Raster.from_positions(xy, bin_um, single_cell)
    ti, pi = r.image(t), r.image(p)
    win = _win(r.shape)
    out = np.full(t.shape[1], np.nan)
    if win < 3:
        return out
    for k in range(t.shape[1]):
        a = ti[k][r.mask]
        rng = float(a.max() - a.min()) if a.size else 0.0
        if rng <= 1e-12:
            continue
        _, smap = structural_similarity(ti[k], pi[k], data_range=rng, win_size=win, full=True)
        out[k] = float(smap[r.mask].mean())
    return out


def ssim_per_gene(xy, truth, pred, **kwargs) -> float:
    """Mean of :func:`ssim_each` over genes with a non-constant truth image."""
    s = ssim_each(xy, truth, pred, **kwargs)
    s = s[np.isfinite(s)]
    return float(s.mean()) if len(s) else float("nan")


def adjusted_rand_score(labels_true, labels_pred) -> float:
    """Adjusted Rand index (Hubert & Arabie 1985) of two labelings of the same items."""
    a = np.asarray(labels_true)
    b = np.asarray(labels_pred)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("labelings must be 1D and of equal length")
    n = len(a)
    if n < 2:
        return 1.0
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    cont = np.zeros((ia.max() + 1, ib.max() + 1), dtype=np.int64)
    np.add.at(cont, (ia, ib), 1)

    def comb2(x):
        x = np.asarray(x, dtype=np.float64)
        return (x * (x - 1) / 2).sum()

    sum_ij = comb2(cont)
    sum_a = comb2(cont.sum(axis=1))
    sum_b = comb2(cont.sum(axis=0))
    total = n * (n - 1) / 2
    expected = sum_a * sum_b / total
    maximum = (sum_a + sum_b) / 2
    if maximum == expected:  # both trivial (one cluster each, or all singletons): identical
        return 1.0
    return float((sum_ij - expected) / (maximum - expected))


class LabelClassifier:
    """Multinomial logistic regression (expression → domain label): genes standardized with the
    training mean/std, L2 penalty ``l2``, fitted full-batch with torch L-BFGS from zeros
    (deterministic)."""

    def __init__(self, l2: float = 1e-3, max_iter: int = 200):
        self.l2 = float(l2)
        self.max_iter = int(max_iter)

    def fit(self, X, labels) -> "LabelClassifier":
        import torch

        X = np.asarray(X, dtype=np.float64)
        labels = np.asarray(labels).astype(str)
        self.classes_, y = np.unique(labels, return_inverse=True)
        self.mean_ = X.mean(axis=0)
        sd = X.std(axis=0)
        self.std_ = np.where(sd > 1e-12, sd, 1.0)
        Xt = torch.as_tensor((X - self.mean_) / self.std_, dtype=torch.float64)
        yt = torch.as_tensor(y)
        k, d = len(self.classes_), X.shape[1]
        W = torch.zeros(d, k, dtype=torch.float64, requires_grad=True)
        b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=self.max_iter, history_size=20,
                                line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(Xt @ W + b, yt) + self.l2 * (W ** 2).sum()
            loss.backward()
            return loss

        if k > 1:
            opt.step(closure)
        self.W_ = W.detach().numpy()
        self.b_ = b.detach().numpy()
        return self

    def decision(self, X) -> np.ndarray:
        X = (np.asarray(X, dtype=np.float64) - self.mean_) / self.std_
        return X @ self.W_ + self.b_

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.decision(X), axis=1)]


def top_expressed_genes(X, n: int = 200) -> np.ndarray:
    """Indices (sorted) of the ``n`` genes with the highest mean in ``X`` (cells × genes)."""
    X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
    mean = np.asarray(X, dtype=np.float64).mean(axis=0)
    n = int(min(n, len(mean)))
    return np.sort(np.argsort(-mean, kind="stable")[:n])
