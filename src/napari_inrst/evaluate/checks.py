"""Quality control of a section stack and of its field (no Qt; torch only inside fits).

* :func:`gap_overview` – where the measured sections sit along z, the gaps between them and how
  wide they are (gaps wider than 1.5 × the median spacing are marked wide).
* :func:`section_consistency` – each measured section against a field trained without it; the
  per-section score (Pearson on 50 µm bins for single-cell data, per spot otherwise) and RMSE are
  turned into robust z-scores across sections (median / MAD); a section whose score is far below
  the others (z < −3) or whose error is far above (z > 3) is flagged as an outlier (distorted,
  damaged or mis-ordered). The spreads have floors (0.03 in Pearson; 10 % of the median relative
  RMSE) so a stack of near-identical clean sections does not flag its edges, which a field can
  only extrapolate.
* :class:`EnsembleUncertainty` – per-point uncertainty as the disagreement of a small **deep
  ensemble** (with bootstrap-like subsampling): K fields (4 by default), each a single network
  (no internal averaging) trained with its own seed on its own random 90 % of the spots of every
  training section. Uncertainty at a point = the standard deviation of the K predictions, in
  units of each gene's standard deviation in the training data, averaged over genes (or for
  chosen genes). Members agree where data constrain them (at measured sections) and disagree far
  from them (wide gaps, outside tissue), which is what users need to see. It measures model
  (epistemic) uncertainty only: not the cell-to-cell noise of the measurements, and not
  systematic errors every member shares (e.g. a misaligned section); with K = 4 the estimate is
  itself noisy (relative error ≈ 1/√(2(K−1)) ≈ 40 % at one point), so read it as a map, not a
  calibrated error bar. :class:`UncertaintyField` exposes it as a one-"gene" field for the plane
  and volume renderers.
* :func:`domains_3d` – k-means (numpy, k-means++ from a fixed seed) of the field's standardized
  latent features on a grid into a napari Labels volume (0 = outside tissue); :func:`domain_ari`
  assigns a section's cells to the same clusters and scores them against annotations (ARI).

A *fit function* ``fit_fn(stack, sections) -> predictor`` (``.predict(xyz)``) is the same seam as
in :mod:`napari_inrst.evaluate.protocol`; by default the real field (:func:`fit_field`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..measure import metrics as M
from ..render.grids import VolumeGrid, grid_over

#: robust z beyond which a section is flagged
FLAG_Z = 3.0
#: floors of the robust spread, so near-identical clean sections are not flagged: the score's
#: (absolute, in Pearson units) and the relative RMSE's (a fraction of its median)
MIN_SPREAD_SCORE = 0.03
MIN_SPREAD_RMSE_FRAC = 0.1


# --- gaps --------------------------------------------------------------------------------
def gap_overview(stack, wide_factor: float = 1.5) -> dict:
    """Sections in z order with their gaps: ``{"sections": [...], "gaps": [...], "median_spacing_um"}``.

    Each gap has ``below``/``above`` (section names), ``z0``/``z1``, ``width_um`` and ``wide``
    (width > ``wide_factor`` × the median spacing of all sections). Excluded sections are listed
    but are not used as gap borders (a damaged section does not fill its gap).
    """
    order = np.argsort(stack.z)
    secs = [{"index": int(i), "name": stack[i].name, "z_um": float(stack[i].z), "n_obs": int(stack[i].n_obs),
             "excluded": bool(stack[i].excluded)} for i in order]
    used = [s for s in secs if not s["excluded"]]
    widths = np.diff([s["z_um"] for s in used])
    every = np.diff([s["z_um"] for s in secs])  # the cutting spacing, excluded sections included
    med = float(np.median(every)) if len(every) else 0.0
    gaps = []
    for a, b, w in zip(used[:-1], used[1:], widths):
        gaps.append({"below": a["name"], "above": b["name"], "z0": a["z_um"], "z1": b["z_um"],
                     "width_um": float(w), "wide": bool(med > 0 and w > wide_factor * med)})
    return {"sections": secs, "gaps": gaps, "median_spacing_um": med,
            "z_range_um": (secs[0]["z_um"], secs[-1]["z_um"]) if secs else (0.0, 0.0)}


def missing_estimate(width_um: float, median_um: float) -> int:
    """How many sections a gap of ``width_um`` probably lacks at the stack's median spacing."""
    if median_um <= 0:
        return 0
    return max(0, int(round(width_um / median_um)) - 1)


def format_gaps(overview: dict) -> str:
    """The overview as text: sections bottom to top with every gap's width between them."""
    med = overview["median_spacing_um"]
    secs = overview["sections"]
    lines = [f"{len(secs)} sections, z {overview['z_range_um'][0]:g}–{overview['z_range_um'][1]:g} µm, "
             f"median spacing {med:g} µm"]
    gaps = {g["below"]: g for g in overview["gaps"]}
    for s in secs:
        lines.append(f"  z={s['z_um']:g} µm  {s['name']} ({s['n_obs']})" + ("  [excluded]" if s["excluded"] else ""))
        g = gaps.get(s["name"])
        if g is not None:
            txt = f"     | gap {g['width_um']:g} µm"
            if g["wide"]:
                n = missing_estimate(g["width_um"], med)
                txt += f"  WIDE gap {g['width_um']:g} µm" + (f" (≈{n} section{'s' * (n != 1)} missing)" if n else "")
            lines.append(txt)
    return "\n".join(lines)


# --- robust statistics -----------------------------------------------------------------------
def robust_z(values, min_spread: float = 0.0) -> np.ndarray:
    """(v − median) / max(1.4826 · MAD, ``min_spread``); NaN values stay NaN."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    if ok.sum() == 0:
        return np.full_like(v, np.nan)
    med = np.median(v[ok])
    mad = 1.4826 * np.median(np.abs(v[ok] - med))
    return (v - med) / max(mad, min_spread, 1e-12)


# --- consistency -----------------------------------------------------------------------------
def _default_fit_fn():
    from .fitting import inr_fit_fn

    return inr_fit_fn()


def section_score(section, pred, single_cell: bool | None = None) -> dict:
    """Agreement of one section's measured values with a prediction at its cells."""
    xy = section.xy
    X = section.X
    if single_cell is None:
        single_cell = M.is_single_cell(xy)
    score = M.binned_pearson(xy, X, pred, 50.0) if single_cell else M.pearson_per_gene(X, pred)
    rms = M.rmse(X, pred)
    sd = float(np.sqrt(np.mean(X.var(axis=0)))) or 1.0
    return {"score": float(score), "pearson": M.pearson_per_gene(X, pred), "rmse": rms, "rmse_rel": rms / sd}


def section_consistency(stack, fit_fn: Callable | None = None, sections: Sequence[int] | None = None, *,
                        progress: Callable[[dict], None] | None = None,
                        should_stop: Callable[[], bool] | None = None) -> list[dict]:
    """Score every measured section against a field trained without it; flag outliers.

    Returns one dict per section (input order): ``index, name, z_um, score, pearson, rmse,
    z_score, z_rmse, flagged, reason``. Sections marked excluded are scored (against a field of
    all non-excluded sections) but not used to fit the others. ``should_stop()`` True ends early
    (remaining sections get NaN).
    """
    from .fitting import fit_predict

    fit_fn = fit_fn or _default_fit_fn()
    sections = list(range(len(stack))) if sections is None else list(sections)
    train_all = [i for i in range(len(stack)) if not stack[i].excluded]
    single_cell = M.is_single_cell(stack[train_all[0] if train_all else 0].xy)
    rows = []
    for k, i in enumerate(sections):
        s = stack[i]
        row = {"index": int(i), "name": s.name, "z_um": float(s.z), "excluded": bool(s.excluded)}
        kept = [j for j in train_all if j != i]
        if should_stop is not None and should_stop() or not kept:
            row.update(score=np.nan, pearson=np.nan, rmse=np.nan, rmse_rel=np.nan)
        else:
            _, (pred,), _ = fit_predict(stack, fit_fn, kept, [i])
            row.update(section_score(s, pred, single_cell))
        rows.append(row)
        if progress is not None:
            progress({"done": k + 1, "total": len(sections), "section": s.name, "score": row["score"]})
    zs = robust_z([r["score"] for r in rows], MIN_SPREAD_SCORE)
    rel = np.array([r["rmse_rel"] for r in rows], dtype=np.float64)
    floor = MIN_SPREAD_RMSE_FRAC * float(np.nanmedian(rel)) if np.isfinite(rel).any() else 0.0
    zr = robust_z(rel, floor)
    for r, a, b in zip(rows, zs, zr):
        r["z_score"] = float(a)
        r["z_rmse"] = float(b)
        reasons = []
        if np.isfinite(a) and a < -FLAG_Z:
            reasons.append(f"agrees far less with its neighbours than the others (z = {a:.1f})")
        if np.isfinite(b) and b > FLAG_Z:
            reasons.append(f"error far above the others (z = {b:.1f})")
        r["flagged"] = bool(reasons)
        r["reason"] = "; ".join(reasons)
    return rows


# --- uncertainty -----------------------------------------------------------------------------
def subsample_stack(stack, frac: float, seed: int):
    """A copy of ``stack`` where every section keeps a random ``frac`` of its spots."""
    rng = np.random.default_rng(seed)
    out = stack.select(range(len(stack)))
    for s in out.sections:
        n = s.n_obs
        keep = np.sort(rng.choice(n, max(1, int(round(frac * n))), replace=False))
        s.adata = s.adata[keep].copy()
    return out


@dataclass
class EnsembleUncertainty:
    """Disagreement of K predictors (a deep ensemble). ``scale``: per-gene std of the data."""

    members: list
    scale: np.ndarray
    genes: list = field(default_factory=list)

    def mean(self, xyz) -> np.ndarray:
        return np.mean([np.asarray(m.predict(xyz), dtype=np.float64) for m in self.members], axis=0)

    def uncertainty(self, xyz, genes: Sequence[int] | None = None) -> np.ndarray:
        """(n,) std across members in units of each gene's data std, averaged over ``genes`` (all)."""
        from ..field.model import FieldModel

        # unclamped: beyond the field's box the members' disagreement (extrapolation) is the signal
        preds = np.stack([np.asarray(m.predict(xyz, clamp=False) if isinstance(m, FieldModel) else m.predict(xyz),
                                     dtype=np.float64) for m in self.members])
        if genes is not None:
            preds = preds[:, :, list(genes)]
            scale = self.scale[list(genes)]
        else:
            scale = self.scale
        sd = preds.std(axis=0) / np.maximum(scale, 1e-9)
        return sd.mean(axis=1).astype(np.float32)

    def volume(self, grid, genes=None) -> np.ndarray:
        """Uncertainty on a :class:`~napari_inrst.render.grids.VolumeGrid` as a (z, y, x) float32 volume."""
        return self.uncertainty(grid.points(), genes).reshape(grid.shape)


class UncertaintyField:
    """The ensemble's uncertainty as an :class:`~napari_inrst.field.api.ExpressionField` with one
    "gene", ``"uncertainty"``, so the plane and volume renderers show it like any gene. Occupancy
    and bounds come from ``base`` (a member by default)."""

    genes = ["uncertainty"]

    def __init__(self, ensemble: EnsembleUncertainty, base=None, genes: Sequence[int] | None = None):
        self.ensemble = ensemble
        self.base = base if base is not None else ensemble.members[0]
        self._genes = None if genes is None else list(genes)

    def latent(self, xyz) -> np.ndarray:
        return self.ensemble.uncertainty(np.asarray(xyz, dtype=np.float64), self._genes)[:, None]

    def decode(self, latent, genes) -> np.ndarray:
        lat = np.asarray(latent, dtype=np.float32)
        return lat[:, [0] * len(list(genes))]

    def occupancy(self, xyz) -> np.ndarray:
        if hasattr(self.base, "occupancy"):
            return np.asarray(self.base.occupancy(xyz), dtype=np.float32)
        return np.ones(len(xyz), dtype=np.float32)

    def bounds(self):
        return self.base.bounds()


def member_fit_fn(config=None, **fit_kwargs) -> Callable:
    """``fit_fn(stack, sections, seed)`` training one ensemble member: the real field with
    ``config`` (default config otherwise), the given seed, a single network (``ensemble=1``) and
    no interpolant blend (``blend=False``): averaging networks, or blending each with the same
    interpolation of the data, would hide the disagreement this ensemble measures."""

    def fit(st, secs, seed):
        from ..field import FieldConfig, fit_field

        cfg = (config or FieldConfig()).replace(seed=int(seed), ensemble=1, blend=False)
        return fit_field(st, cfg, sections=list(secs), **fit_kwargs)

    return fit


def fit_ensemble(stack, fit_fn: Callable | None = None, sections: Sequence[int] | None = None, *,
                 k: int = 4, frac: float = 0.9, seed: int = 0,
                 progress: Callable[[dict], None] | None = None) -> EnsembleUncertainty:
    """Train ``k`` members, each with seed ``seed + m`` on a random ``frac`` of every section's spots.

    ``fit_fn(stack, sections, seed)`` may take a seed; otherwise it is called as ``fit_fn(stack,
    sections)`` and only the spot subsets differ.
    """
    import inspect

    if fit_fn is None:
        fit_fn = member_fit_fn()

    sections = stack.training_sections() if sections is None else list(sections)
    takes_seed = len(inspect.signature(fit_fn).parameters) >= 3
    members = []
    for m in range(k):
        sub = subsample_stack(stack, frac, seed + m) if frac < 1 else stack
        members.append(fit_fn(sub, sections, seed + m) if takes_seed else fit_fn(sub, sections))
        if progress is not None:
            progress({"done": m + 1, "total": k})
    X = stack.expression(sections)
    return EnsembleUncertainty(members, X.std(axis=0).astype(np.float64), list(stack.genes))


# --- grids and domains -----------------------------------------------------------------------
def default_grid(field, stack=None, n_xy: int = 64) -> VolumeGrid:
    """A grid over the field's bounds: ``n_xy`` pixels along the longer of x/y, z at the sections
    (or every 10 µm when the stack is unknown) plus mid-gap planes."""
    lo, hi = field.bounds()
    lo = np.asarray(lo, float)
    hi = np.asarray(hi, float)
    sxy = float(max(hi[0] - lo[0], hi[1] - lo[1]) / max(n_xy - 1, 1))
    if stack is not None and len(stack) > 1:
        sz = float(np.median(np.diff(np.sort(stack.z)))) / 2
    else:
        sz = 10.0
    return grid_over(lo, hi, sxy, max(sz, 1e-3))


def kmeans(X, k: int, seed: int = 0, n_iter: int = 50, n_init: int = 3):
    """k-means (Lloyd, k-means++ initialisation) in numpy: ``(labels 0..k-1, centroids)``."""
    X = np.asarray(X, dtype=np.float64)
    k = int(min(k, len(X)))
    rng = np.random.default_rng(seed)
    best = (np.inf, None, None)
    x2 = (X ** 2).sum(1)
    for _ in range(n_init):
        C = [X[rng.integers(len(X))]]
        d2 = ((X - C[0]) ** 2).sum(1)
        for _ in range(1, k):
            p = d2 / d2.sum() if d2.sum() > 0 else np.full(len(X), 1 / len(X))
            C.append(X[rng.choice(len(X), p=p)])
            d2 = np.minimum(d2, ((X - C[-1]) ** 2).sum(1))
        C = np.array(C)
        for _ in range(n_iter):
            D = x2[:, None] - 2 * X @ C.T + (C ** 2).sum(1)[None]
            lab = D.argmin(1)
            newC = np.array([X[lab == j].mean(0) if (lab == j).any() else C[j] for j in range(k)])
            if np.allclose(newC, C):
                break
            C = newC
        D = x2[:, None] - 2 * X @ C.T + (C ** 2).sum(1)[None]
        lab = D.argmin(1)
        inertia = float(D[np.arange(len(X)), lab].sum())
        if inertia < best[0]:
            best = (inertia, lab, C)
    return best[1], best[2]


@dataclass
class Domains:
    """3D domains: Labels volume (0 outside tissue, 1..k), grid, and what assigns new points."""

    labels: np.ndarray
    grid: VolumeGrid | None
    centroids: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    def assign(self, field, xyz) -> np.ndarray:
        """Domain (1..k) of each point by its nearest centroid in standardized latent space."""
        L = (np.asarray(field.latent(np.asarray(xyz, dtype=np.float64)), dtype=np.float64) - self.mean) / self.std
        D = ((L[:, None, :] - self.centroids[None]) ** 2).sum(-1)
        return D.argmin(1) + 1


def domains_3d(field, grid: VolumeGrid | None = None, k: int = 8, *, seed: int = 0, stack=None,
               occupancy_threshold: float = 0.5, max_fit_points: int = 20000) -> Domains:
    """Cluster the field's latent features on ``grid`` (default :func:`default_grid`) into ``k`` domains.

    Points with occupancy < ``occupancy_threshold`` get label 0. Latent features are standardized
    per dimension; k-means runs on at most ``max_fit_points`` random inside points, then every grid
    point is assigned to its nearest centroid.
    """
    grid = grid or default_grid(field, stack)
    pts = grid.points()
    inside = np.asarray(field.occupancy(pts)) >= occupancy_threshold
    labels = np.zeros(len(pts), dtype=np.int32)
    if inside.sum() < k:
        return Domains(labels.reshape(grid.shape), grid, np.zeros((0, 1)), np.zeros(1), np.ones(1))
    L = np.asarray(field.latent(pts[inside]), dtype=np.float64)
    mean = L.mean(0)
    std = np.where(L.std(0) > 1e-9, L.std(0), 1.0)
    Z = (L - mean) / std
    rng = np.random.default_rng(seed)
    fit_idx = rng.choice(len(Z), min(len(Z), max_fit_points), replace=False)
    _, C = kmeans(Z[fit_idx], k, seed=seed)
    D = (Z ** 2).sum(1)[:, None] - 2 * Z @ C.T + (C ** 2).sum(1)[None]
    labels[inside] = D.argmin(1) + 1
    return Domains(labels.reshape(grid.shape), grid, C, mean, std)


def domains_from_points(field, xyz, k: int = 8, *, seed: int = 0, max_fit_points: int = 20000) -> Domains:
    """k-means of the field's standardized latent at given points (e.g. the training cells), for
    assigning other points with :meth:`Domains.assign` (no volume: ``labels`` is empty)."""
    xyz = np.asarray(xyz, dtype=np.float64)
    rng = np.random.default_rng(seed)
    if len(xyz) > max_fit_points:
        xyz = xyz[rng.choice(len(xyz), max_fit_points, replace=False)]
    L = np.asarray(field.latent(xyz), dtype=np.float64)
    mean = L.mean(0)
    std = np.where(L.std(0) > 1e-9, L.std(0), 1.0)
    _, C = kmeans((L - mean) / std, k, seed=seed)
    return Domains(np.zeros((0, 0, 0), dtype=np.int32), None, C, mean, std)


def domain_ari(field, domains: Domains, section, labels_key: str) -> float:
    """ARI of the domains assigned to a section's cells against ``obs[labels_key]``."""
    truth = np.asarray(section.adata.obs[labels_key]).astype(str)
    return M.adjusted_rand_score(truth, domains.assign(field, section.xyz))
