"""Training data for the field, resolved from a stack and a config (numpy; no torch here).

Two kinds of targets, one interface for the training loop (:mod:`.trainer`):

* :class:`StackData` — **dense**: every training cell's centred expression (n × genes; per gene
  ÷ std when ``config.standardize`` resolves to True) is the target; the gene decoder is trained (initialised from
  PCA). For stacks that fit in memory.
* :class:`ProjectedData` — **projected**: the targets are the cells' coordinates in a fixed
  orthonormal PCA basis V (genes × r) of the centred (scaled) expression, plus each cell's residual
  energy ‖x − V Vᵀx‖². With the decoder fixed to V, the gene-space squared error equals the
  latent-space squared error plus that residual, exactly (V has orthonormal columns), so training
  on n × r numbers optimizes the same RMSE over all genes as the dense targets would, with memory
  n × r instead of n × genes. The expression is streamed from disk chunk by chunk
  (:class:`~napari_inrst.stack.lazy.LazyStack`), so peak memory is bounded by the chunk size and the
  n × r projections (10^6 cells × r = 128: 512 MB), whatever the number of genes.

Both hold: ``idx`` (training sections), ``n_genes``, ``mean``/``std`` (per gene: the
targets are (x − mean) / std; std = 1 unless ``standardize``), ``xyz`` (n × 3 µm, float32), ``train``/``val`` (row indices), ``lo``/``hi``,
``spacing`` (µm between neighbouring cells/spots), ``z_spacing``, ``occ_xyz``/``occ_lab``
(occupancy samples), ``X_raw_min``, ``targets`` (n × genes or n × r, float32).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

#: dense targets above this many values (cells × genes) switch to projected targets by default
DENSE_LIMIT = 200_000_000  # 800 MB of float32
#: cells used to estimate gene means/stds and the PCA basis of projected targets
PCA_ROWS = 60_000
#: validation cells at most (a validation pass must stay cheap next to the training steps)
VAL_MAX = 20_000
#: median distance between neighbouring spots below which coordinates look like array units
ARRAY_UNITS_SPACING = 2.0
#: held-out spots for validation on one section: at least this many (or ``val_frac``, whichever is more)
MIN_VAL_SPOTS = 60


def unit_warning(spacing: float) -> str | None:
    """A one-line warning when the spot spacing (in the stack's units, µm after ``unit_factor``)
    looks like array units (< :data:`ARRAY_UNITS_SPACING`), else None. The field is unit-free (it
    sees coordinates relative to the data's own spacing), but other figures (bins, scale bars,
    z positions) are in µm."""
    if spacing is not None and 0 < spacing < ARRAY_UNITS_SPACING:
        return (f"neighbouring spots are only {spacing:.3g} µm apart: the coordinates look like array units, "
                "not µm; pass --unit-factor (µm per unit) so z, bins and scale bars are in µm")
    return None


def holdout_positions(z, max_frac: float = 1 / 3) -> list[int]:
    """Positions (indices into ``z``) of the sections to hold out for validation of a
    missing-section fit: interior sections only (a kept section below and above each), never two
    neighbours, at most ``max(1, n · max_frac)`` of them, the most central first. Empty below 3
    sections (then validation uses held-out spots)."""
    z = np.asarray(z, dtype=np.float64)
    n = len(z)
    if n < 3:
        return []
    order = np.argsort(z, kind="stable")
    k = max(1, int(n * max_frac))
    mid = (n - 1) / 2
    chosen: list[int] = []
    for p in sorted(range(1, n - 1), key=lambda p: (abs(p - mid), p)):
        if all(abs(p - q) > 1 for q in chosen):
            chosen.append(p)
        if len(chosen) == k:
            break
    return sorted(int(order[p]) for p in chosen)


def spacing_of(sections) -> float:
    """Median over sections of the median nearest-neighbour distance (µm) of their cells/spots."""
    from ..stack import estimate_spacing

    return float(np.median([estimate_spacing(s.xy) for s in sections]))


def z_spacing_of(z) -> float | None:
    u = np.unique(np.asarray(z, dtype=np.float64))
    if len(u) < 2:
        return None
    return float(np.median(np.diff(u)))


def occupancy_samples(sections, spacing: float, lo, hi, rng, max_per_section: int = 8000):
    """Points on each section plane labelled inside (1: at/near cells) or outside (0: empty area)."""
    from scipy.spatial import cKDTree

    pts, lab = [], []
    margin = 0.25 * (hi[:2] - lo[:2]) + 2 * spacing
    a, b = lo[:2] - margin, hi[:2] + margin
    for s in sections:
        xy = s.xy
        m = int(min(max_per_section, max(2 * len(xy), 500)))
        cand = rng.uniform(a, b, size=(m, 2))
        d, _ = cKDTree(xy).query(cand, k=1)
        inside = d <= 1.0 * spacing
        outside = d >= 2.5 * spacing
        keep = inside | outside
        k = min(len(xy), m)
        own = xy[rng.choice(len(xy), k, replace=False)]
        p = np.concatenate([cand[keep], own])
        lbl = np.concatenate([inside[keep].astype(np.float32), np.ones(k, np.float32)])
        pts.append(np.column_stack([p, np.full(len(p), s.z)]))
        lab.append(lbl)
    return np.concatenate(pts), np.concatenate(lab).astype(np.float32)  # float64 points (centred by the caller)


def neighbour_noise(X, xy, sizes, chunk_rows: int = 16384) -> np.ndarray:
    """Each gene's measurement-noise variance, estimated without a model: half the mean squared
    difference between every cell and its nearest neighbour in the same section (rows of ``X``
    grouped by section in ``sizes``; ``xy`` the cells' in-plane positions). Neighbours one spacing
    apart share the tissue's expression up to the structure at that scale, so the estimate is the
    noise plus a little signal (an upper bound on the noise)."""
    from scipy.spatial import cKDTree

    X = np.asarray(X)
    acc = np.zeros(X.shape[1], dtype=np.float64)
    m, off = 0, 0
    for n in np.asarray(sizes, dtype=np.int64):
        n = int(n)
        if n >= 2:
            p = np.asarray(xy[off:off + n], dtype=np.float64)
            _, j = cKDTree(p).query(p, k=2)
            nb = off + j[:, 1]
            for r0 in range(0, n, chunk_rows):
                d = X[off + r0:off + min(n, r0 + chunk_rows)] - X[nb[r0:r0 + chunk_rows]]
                acc += np.einsum("ij,ij->j", d, d, dtype=np.float64)
            m += n
        off += n
    return 0.5 * acc / max(m, 1)


def gene_scale(mean, sd, standardize, noise_sd=None):
    """(mean, std) the targets are centred and scaled by. ``standardize``: True — per-gene std
    (every gene weighs the same); "noise" — each gene's noise std (``noise_sd``, at most its std):
    the noise weighs the same in every gene, so a gene counts by its signal-to-noise ratio; False —
    1 (genes weigh by their variance). Genes with (near) zero spread keep std 1. Always centred:
    projected targets need it (their PCA basis spans the centred data only), and the decoder's bias
    adds the mean back."""
    mean = np.asarray(mean, dtype=np.float32)
    sd = np.asarray(sd, dtype=np.float32)
    if not standardize:
        return mean, np.ones_like(sd)
    if standardize == "noise":
        sd = np.minimum(np.asarray(noise_sd, dtype=np.float32), sd)
    floor = max(float(sd.max()) * 1e-3, 1e-6) if sd.size else 1e-6
    return mean, np.where(sd > floor, sd, 1.0).astype(np.float32)


def _check_sections(stack, sections):
    idx = list(stack.training_sections() if sections is None else sections)
    if not idx:
        raise InputError(None, "no sections to train on (all are excluded)")
    for i in idx:
        if not 0 <= int(i) < len(stack.sections):
            raise InputError(None, f"section index {i} out of range (stack has {len(stack.sections)})")
    return [int(i) for i in idx]


def split(n: int, val_frac: float, seed: int, val_max: int = VAL_MAX):
    """(train, val) row indices, sorted; fixed by the seed."""
    rng = np.random.default_rng(seed)
    n_val = int(round(val_frac * n)) if val_frac > 0 else 0
    n_val = max(0, min(n_val, n - 5, val_max))
    perm = rng.permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


class _Base:
    projected = False

    def _geometry(self, stack, xyz, config, sizes):
        self.sec = np.repeat(np.arange(len(sizes)), sizes).astype(np.int64)  # position in ``idx`` of each row
        self.sec_z = np.array([float(stack.sections[i].z) for i in self.idx])
        xyz = np.asarray(xyz, dtype=np.float64)
        self.lo, self.hi = xyz.min(0), xyz.max(0)
        # the network sees coordinates centred in float64, then cast to float32 (a stack far from
        # the origin keeps its resolution); ``origin`` is stored in the model's ModelConfig and subtracted by
        # FieldModel before every evaluation
        self.origin = (self.lo + self.hi) / 2
        self.xyz = (xyz - self.origin).astype(np.float32)
        secs = [stack.sections[i] for i in self.idx]
        self.spacing = spacing_of(secs)
        self.z_spacing = z_spacing_of(xyz[:, 2])
        rng = np.random.default_rng(config.seed + 17)
        occ, self.occ_lab = occupancy_samples(secs, self.spacing, self.lo, self.hi, rng)
        self.occ_xyz = (occ - self.origin).astype(np.float32)

    def default_rank(self, cfg) -> int:
        if cfg.rank:
            return int(cfg.rank)
        return int(cfg.auto_rank_small if len(self.train) < cfg.small_data else cfg.auto_rank)

    def geometry(self):
        """The :class:`~.encodings.Geometry` the encodings are resolved on: the data's box in the
        network's frame (centred; one section: a slab one spot spacing thick) and its spacings."""
        from .encodings import Geometry

        lo, hi = self.lo - self.origin, self.hi - self.origin
        sp = float(self.spacing)
        if hi[2] - lo[2] < 1e-6 * sp:  # one section: a thin slab (one spot spacing thick)
            lo[2] -= sp
            hi[2] += sp
        return Geometry(tuple(float(v) for v in lo), tuple(float(v) for v in hi), sp, self.z_spacing)

    def rank_for(self, cfg) -> int:
        return min(self.default_rank(cfg), self.n_genes)

    @property
    def n(self) -> int:
        return len(self.xyz)

    def task_split(self, config):
        """The validation split that mimics the task: ``(task, train_rows, val_rows, val_positions)``.

        Three or more training sections: task ``"held-out sections"``, the cells of
        :func:`holdout_positions` (whole interior sections) are validation, the other sections
        train. Fewer: ``"held-out spots"``, a random ``max(val_frac, MIN_VAL_SPOTS / n)`` of
        the cells (fixed by the seed)."""
        pos = holdout_positions(self.sec_z) if getattr(config, "final_fit", True) else []
        if pos:
            val_mask = np.isin(self.sec, pos)
            val = np.flatnonzero(val_mask)
            if len(val) > VAL_MAX:
                rng = np.random.default_rng(config.seed + 41)
                val = np.sort(rng.choice(val, VAL_MAX, replace=False))
            return "held-out sections", np.flatnonzero(~val_mask), val, pos
        frac = min(0.5, max(float(config.val_frac), MIN_VAL_SPOTS / max(self.n, 1)))
        train, val = split(self.n, frac, config.seed)
        return "held-out spots", train, val, []


class StackData(_Base):
    """Dense targets from an in-memory :class:`~napari_inrst.stack.SectionStack`."""

    def __init__(self, stack, config, sections=None):
        self.idx = _check_sections(stack, sections)
        X = stack.expression(self.idx).astype(np.float32)
        xyz = stack.coords(self.idx).astype(np.float64)
        names = ", ".join(stack.names[i] for i in self.idx)
        if len(X) < 10:
            raise InputError(names, f"only {len(X)} spots to train on; need ≥ 10")
        if not np.isfinite(X).all() or not np.isfinite(xyz).all():
            raise InputError(names, "NaN or infinite values in expression or coordinates")
        self.n_genes = X.shape[1]
        sizes = [stack.sections[i].n_obs for i in self.idx]
        mode = config.resolved_standardize(self.n_genes)
        noise = np.sqrt(neighbour_noise(X, xyz[:, :2], sizes)) if mode == "noise" else None
        self.mean, self.std = gene_scale(X.mean(0), X.std(0), mode, noise)
        self.X_raw_min = float(X.min())
        self.targets = ((X - self.mean) / self.std).astype(np.float32)
        self.train, self.val = split(len(X), config.val_frac, config.seed)
        self._geometry(stack, xyz, config, sizes)

    @property
    def Xs(self) -> np.ndarray:
        return self.targets


class ProjectedData(_Base):
    """Projected targets (n × r) streamed from a :class:`~napari_inrst.stack.lazy.LazyStack` (or any
    stack: in-memory sections are streamed the same way)."""

    projected = True

    def __init__(self, stack, config, sections=None, *, rank: int | None = None, chunk_rows: int = 16384,
                 pca_rows: int = PCA_ROWS, progress=None):
        self.idx = _check_sections(stack, sections)
        secs = [stack.sections[i] for i in self.idx]
        sizes = np.array([s.n_obs for s in secs])
        n = int(sizes.sum())
        names = ", ".join(s.name for s in secs)
        if n < 10:
            raise InputError(names, f"only {n} cells to train on; need ≥ 10")
        self.n_genes = stack.n_genes
        self.train, self.val = split(n, config.val_frac, config.seed)
        r = int(rank or (config.rank or (config.auto_rank_small if n < config.small_data else config.auto_rank)))
        self.r = min(r, self.n_genes)
        chunks = _chunk_reader(stack)
        # 1) gene means/stds and the PCA basis from a random subset of cells
        rng = np.random.default_rng(config.seed + 29)
        take = min(1.0, pca_rows / n)
        m = 0
        s1 = np.zeros(self.n_genes)
        s2 = np.zeros((self.n_genes, self.n_genes))  # Σ xᵀx over the subset (float64 accumulation)
        for i, s in zip(self.idx, secs):
            k = max(1, int(round(take * s.n_obs)))
            rows = np.sort(rng.choice(s.n_obs, k, replace=False))
            for _, c in chunks(i, chunk_rows, rows):
                m += len(c)
                s1 += c.sum(0, dtype=np.float64)
                s2 += (c.T @ c).astype(np.float64)
        mu = s1 / m
        cov_raw = (s2 - m * np.outer(mu, mu)) / max(m - 1, 1)  # covariance of the raw values
        sd = np.sqrt(np.maximum(np.diag(cov_raw) * (m - 1) / max(m, 1), 0))
        mode = config.resolved_standardize(len(mu))
        noise = _patch_noise(stack, self.idx, chunks, chunk_rows, pca_rows, rng) if mode == "noise" else None
        self.mean, self.std = gene_scale(mu, sd, mode, noise)
        cov = cov_raw / np.outer(self.std, self.std)  # covariance of the standardized values
        from ..stack.linalg import top_eigen

        evals, evecs = top_eigen(cov, self.r, np.random.default_rng(config.seed + 31))
        self.basis = np.ascontiguousarray(evecs, dtype=np.float32)  # genes × r, orthonormal
        self.explained = float(evals.sum() / max(np.trace(cov), 1e-12))
        del s2, cov_raw, cov
        # 2) one streamed pass: project every cell, keep its residual energy
        self.targets = np.empty((n, self.r), dtype=np.float32)
        self.resid = np.empty(n, dtype=np.float32)
        xyz = np.empty((n, 3), dtype=np.float64)
        self.X_raw_min = np.inf
        off = 0
        inv = (1.0 / self.std).astype(np.float32)
        mz = (self.mean * inv).astype(np.float32)  # mean / std
        V_inv = (self.basis * inv[:, None]).astype(np.float32)  # diag(1/std) V
        shift = mz @ self.basis  # (mean/std) V
        for k, (i, s) in enumerate(zip(self.idx, secs)):
            xyz[off:off + s.n_obs] = s.xyz
            for r0, c in chunks(i, chunk_rows, None, sparse=True):
                rows = slice(off + r0, off + r0 + c.shape[0])
                proj, sq = _project(c, V_inv, shift, inv, mz)
                self.X_raw_min = min(self.X_raw_min, _min_value(c))
                self.targets[rows] = proj
                self.resid[rows] = np.maximum(sq - np.einsum("ij,ij->i", proj, proj), 0)
            off += s.n_obs
            if progress is not None:
                progress({"phase": "read", "section": s.name, "done": k + 1, "total": len(secs)})
        if not np.isfinite(xyz).all():
            raise InputError(names, "NaN or infinite coordinates")
        self._geometry(stack, xyz, config, sizes)

    def rank_for(self, cfg) -> int:
        return self.r


def _patch_noise(stack, idx, chunks, chunk_rows, rows_total, rng, patch: int = 64):
    """:func:`neighbour_noise` (as std) from patches of neighbouring cells (a random subset would
    have no close neighbours): per section, random centres and their ``patch`` nearest cells, about
    ``rows_total`` cells in all."""
    from scipy.spatial import cKDTree

    secs = [stack.sections[i] for i in idx]
    n = sum(s.n_obs for s in secs)
    parts, xys, sizes = [], [], []
    for i, s in zip(idx, secs):
        xy = np.asarray(s.xy, dtype=np.float64)
        want = rows_total * len(xy) / max(n, 1)  # this section's share of the cells
        if want >= len(xy) or len(xy) <= patch:
            rows = np.arange(len(xy))
        else:
            centres = rng.choice(len(xy), max(1, int(round(want / patch))), replace=False)
            _, nb = cKDTree(xy).query(xy[centres], k=patch)
            rows = np.unique(np.asarray(nb).reshape(-1))
        parts.append(np.concatenate([c for _, c in chunks(i, chunk_rows, rows)]))
        xys.append(xy[rows])
        sizes.append(len(rows))
    return np.sqrt(neighbour_noise(np.concatenate(parts), np.concatenate(xys), sizes))


def _project(c, V_inv, shift, inv, mz):
    """Rows ``c`` (normalized; dense or CSR) → (projections ((c − mean)/std) V, squared norms of
    (c − mean)/std), without densifying a sparse chunk: ((c − m)/s) V = c (V/s) − (m/s) V."""
    from scipy import sparse

    proj = np.asarray(c @ V_inv, dtype=np.float32) - shift
    if sparse.issparse(c):
        cs = c.multiply(inv[None, :]).tocsr()  # c / std
        sq = np.asarray(cs.multiply(cs).sum(axis=1)).ravel() - 2.0 * np.asarray(cs @ mz).ravel() + float(mz @ mz)
    else:
        z = c * inv - mz
        sq = np.einsum("ij,ij->i", z, z)
    return proj, sq.astype(np.float32)


def _min_value(c) -> float:
    from scipy import sparse

    if sparse.issparse(c):
        m = float(c.data.min()) if c.nnz else 0.0
        return min(m, 0.0) if c.nnz < c.shape[0] * c.shape[1] else m
    return float(c.min()) if c.size else np.inf


def _chunk_reader(stack):
    """A function (i, chunk_rows, rows, sparse=False) → iterator of (first_row, normalized chunk)."""
    if getattr(stack, "lazy", False):
        return lambda i, chunk_rows, rows, sparse=False: stack.iter_chunks(i, chunk_rows, rows, sparse=sparse)

    def read(i, chunk_rows, rows, sparse=False):
        X = stack.sections[i].X
        if rows is not None:
            yield 0, X[rows].astype(np.float32)
            return
        for r0 in range(0, len(X), chunk_rows):
            yield r0, X[r0:r0 + chunk_rows].astype(np.float32, copy=True)

    return read


def choose_data(stack, config, sections=None, *, progress=None):
    """Dense targets when they fit (:data:`DENSE_LIMIT` values), else projected; ``config.targets``
    (``auto`` | ``dense`` | ``projected``) overrides. A lazily read stack is always projected."""
    mode = getattr(config, "targets", "auto")
    lazy = getattr(stack, "lazy", False)
    if mode == "dense" and lazy:
        raise InputError(None, "dense targets need the sections in memory; this stack is read lazily")
    if mode == "auto":
        idx = _check_sections(stack, sections)
        n = sum(stack.sections[i].n_obs for i in idx)
        mode = "projected" if lazy or n * stack.n_genes > DENSE_LIMIT else "dense"
    if mode == "projected":
        return ProjectedData(stack, config, sections, progress=progress)
    return StackData(stack, config, sections)
