"""The QC widget's view model (no Qt): the stack under check, the settings of its jobs, their
results, and psygnal events when any of them change.

Jobs are generator functions built on the UI thread (they capture the settings there) and run by
the widget in a background worker; they only call the core — :func:`~napari_inrst.evaluate.protocol.hold_out`
(fit without a section → predict it → score each gene), :func:`~napari_inrst.evaluate.checks.section_consistency`,
:func:`~napari_inrst.evaluate.checks.fit_ensemble`, :func:`~napari_inrst.evaluate.checks.domains_3d` on
:func:`~napari_inrst.evaluate.checks.default_grid` — and return what ``set_*`` stores::

    state = QCState()
    state.set_stack(stack)
    job = state.holdout_job(3)          # a generator function: yields messages, returns the result
    state.set_holdout(run_to_end(job))  # → holdout_changed
"""

from __future__ import annotations

import inspect
from typing import Callable

import numpy as np
from psygnal import Signal

#: pixels along the longer of x/y of the 3D domains grid
DOMAINS_N_XY = 48
#: pixels on the longer side of the uncertainty plane, voxels on the longest axis of its volume
UNCERTAINTY_PLANE_PX = 256
UNCERTAINTY_VOLUME_VOX = 64
#: an annotation column offered for the domains' ARI has at most this many classes
MAX_ANNOTATION_CLASSES = 50


def render_uncertainty_volume(uf, masked: bool):
    """(grid, volume) of the uncertainty field (one "gene") over its bounds."""
    from ..render.grids import volume_grid
    from ..render.volume import evaluate_volume

    grid = volume_grid(uf.bounds(), UNCERTAINTY_VOLUME_VOX)
    return grid, evaluate_volume(uf, grid, [0], masked=masked)[0]


def render_uncertainty_plane(uf, z: float, masked: bool):
    """(grid, image) of the uncertainty field at height ``z`` over its x/y extent."""
    from ..render.plane import evaluate_plane, field_extent, plane_grid_for

    grid = plane_grid_for(uf, float(z), field_extent(uf, 0.05), UNCERTAINTY_PLANE_PX)
    return grid, evaluate_plane(uf, grid, [0], masked=masked)[0]


def _render(ens, uf, masked: bool, z: float | None) -> tuple:
    """``(ensemble, field, volume grid, volume, (plane grid, plane) or None)`` of the uncertainty."""
    plane = render_uncertainty_plane(uf, z, masked) if z is not None else None
    return (ens, uf, *render_uncertainty_volume(uf, masked), plane)


def call_fit(fit_fn: Callable, stack, sections, seed: int = 0):
    """``fit_fn(stack, sections, seed)`` when it takes a seed, else ``fit_fn(stack, sections)``."""
    try:
        n = len(inspect.signature(fit_fn).parameters)
    except (TypeError, ValueError):
        n = 2
    return fit_fn(stack, sections, seed) if n >= 3 else fit_fn(stack, sections)


class QCState:
    """Hold-out QC, section consistency, uncertainty and 3D domains of one stack (no Qt).

    Settings (plain attributes, set by the widget's controls): ``fit_fn`` (the seam
    ``fit_fn(stack, sections[, seed]) -> predictor``; None = the real field at ``steps``),
    ``steps``, ``members``, ``inside_only``, ``n_domains``, ``labels_key``. Results:
    ``holdout``, ``model``, ``pred``, ``rows``, ``consistency``, ``ensemble``,
    ``uncertainty_field``, ``uncertainty_contrast``, ``domains`` — all dropped with the stack.
    """

    stack_changed = Signal(object)
    excluded_changed = Signal(int, bool)
    holdout_changed = Signal(object)  # the result of hold_out
    consistency_changed = Signal(object)  # rows of section_consistency
    uncertainty_changed = Signal(object)  # (grid, volume) display-ready
    domains_changed = Signal(object)

    def __init__(self):
        self.stack = None
        self.fit_fn: Callable | None = None
        self.steps: int | None = None
        self.members = 4
        self.inside_only = True
        self.n_domains = 8
        self.labels_key: str | None = None
        self._clear()

    def _clear(self):
        self.holdout = self.model = self.pred = None
        self.rows: list[dict] = []
        self.consistency = None
        self.ensemble = self.uncertainty_field = self.uncertainty_contrast = None
        self.domains = None

    # --- the stack -----------------------------------------------------------------------------
    def set_stack(self, stack):
        """Check ``stack`` (or nothing); the results of the previous one are dropped."""
        self.stack = stack
        self._clear()
        self.stack_changed.emit(stack)

    def section_labels(self) -> list[str]:
        return [f"{s.name}  (z={s.z:g} µm)" for s in self.stack] if self.stack is not None else []

    def default_holdout(self) -> int:
        return len(self.stack) // 2

    def annotation_columns(self) -> list[str]:
        """obs columns every section has, with few classes (candidates for the domains' ARI)."""
        st = self.stack
        if st is None or not len(st):
            return []
        obs = st[0].adata.obs
        return [str(c) for c in obs.columns
                if all(c in s.adata.obs for s in st) and obs[c].nunique() <= MAX_ANNOTATION_CLASSES]

    def default_gene(self) -> str:
        from .layers import default_gene

        return default_gene(self.stack)

    def set_excluded(self, i: int, excluded: bool = True):
        """Mark section ``i`` missing/damaged (left out of training)."""
        self.stack[i].excluded = bool(excluded)
        self.excluded_changed.emit(int(i), bool(excluded))

    def overview(self) -> tuple[dict, str, list[int]]:
        """``(gap overview, its text with the consistency scores, flagged section indices)``."""
        from ..evaluate.checks import format_gaps, gap_overview

        ov = gap_overview(self.stack)
        text = format_gaps(ov)
        flagged = []
        if self.consistency:
            text += "\nconsistency with a field trained without each section:"
            for r in self.consistency:
                flag = f"  ⚠ {r['reason']}" if r["flagged"] else ""
                text += f"\n  {r['name']}: score {r['score']:.3f} (z {r['z_score']:+.1f}), RMSE {r['rmse']:.3f}{flag}"
            flagged = [r["index"] for r in self.consistency if r["flagged"]]
        return ov, text, flagged

    # --- fitting -------------------------------------------------------------------------------
    def fitter(self, should_stop: Callable[[], bool] | None = None) -> Callable:
        """``fit(stack, sections, seed=0, member=False)`` with the settings of now: the seam
        ``fit_fn``, or the real field at ``steps`` (``member``: one network, for ensemble members)
        stopping when ``should_stop()``."""
        fit_fn, steps = self.fit_fn, self.steps

        def fit(stack, sections, seed: int = 0, member: bool = False):
            if fit_fn is not None:
                return call_fit(fit_fn, stack, sections, seed)
            from ..field import FieldConfig, fit_field

            cfg = FieldConfig(seed=seed) if steps is None else FieldConfig(steps=int(steps), seed=seed)
            if member:
                cfg = cfg.replace(ensemble=1)
            return fit_field(stack, cfg, sections=list(sections), should_stop=should_stop)

        return fit

    def holdout_job(self, h: int, should_stop=None):
        """The job "train without section ``h`` (and the excluded ones), predict and score it".
        Raises ValueError when no section is left to train on."""
        from ..evaluate.protocol import hold_out, kept_sections

        stack, h = self.stack, int(h)
        kept = kept_sections(stack, [h])
        if not kept:
            raise ValueError("nothing left to train on: un-tick a section")
        fit = self.fitter(should_stop)

        def job():
            yield f"training without {stack[h].name} on {len(kept)} sections"
            res = hold_out(stack, fit, h, kept)
            yield f"trained in {res['fit_seconds']:.1f} s and scored"
            return res

        return job

    def set_holdout(self, result: dict):
        self.model, self.holdout = result["model"], result["index"]
        self.pred, self.rows = result["pred"], result["rows"]
        self.holdout_changed.emit(result)

    def holdout_title(self) -> str:
        from ..measure.metrics import pearson_per_gene, rmse

        s = self.stack[self.holdout]
        return (f"{s.name} (z = {s.z:g} µm) predicted by a field trained without it: mean "
                f"Pearson {pearson_per_gene(s.X, self.pred):.3f}, RMSE {rmse(s.X, self.pred):.3f}. "
                "Per gene below: click a header to sort, a gene to show it.")

    def panels(self, gene: str) -> dict | None:
        """Measured, predicted and residual (predicted − measured) of ``gene`` at the held-out
        section, laid out side by side along x, with their colour scales, titles and a status
        line; None without a hold-out result or for an unknown gene."""
        if self.stack is None or self.pred is None or gene not in self.stack.genes:
            return None
        g = self.stack.gene_index(gene)
        s = self.stack[self.holdout]
        xy = s.xy
        meas = s.X[:, g].astype(np.float64)
        pred = self.pred[:, g]
        res = pred - meas
        lo, hi = np.percentile(np.concatenate([meas, pred]), [1, 99.5])
        hi = hi if hi > lo else lo + 1.0
        r = float(np.percentile(np.abs(res), 99)) or 1.0
        x0, x1 = float(xy[:, 0].min()), float(xy[:, 0].max())
        width = x1 - x0
        size = s.spot_diameter_um()
        shift = width + max(0.1 * width, 3 * size) if width > 0 else 100.0
        sc = next((row for row in self.rows if row["gene"] == gene), None)
        score = f"  r = {sc['pearson']:.2f}" if sc is not None and np.isfinite(sc["pearson"]) else ""
        status = (f"{gene} on {s.name} (z = {s.z:g} µm): measured | predicted without it (colour scale "
                  f"{lo:.3g}–{hi:.3g}) | residual (blue under-, orange over-predicted, ±{r:.3g})"
                  + (f"; Pearson {sc['pearson']:.3f}, RMSE {sc['rmse']:.3f}" if sc is not None else ""))
        return {"gene": gene, "index": self.holdout, "z": s.z, "size": size, "shift": shift,
                "data": np.column_stack([np.full(len(xy), s.z), xy[:, 1], xy[:, 0]]),
                "measured": meas, "predicted": pred, "residual": res, "contrast": (lo, hi), "residual_max": r,
                "title_y": float(xy[:, 1].min()), "title_x": [x0, x0 + shift, x0 + 2 * shift],
                "titles": [f"measured {gene}", f"predicted{score}", "residual (pred − meas)"], "status": status}

    # --- section consistency -------------------------------------------------------------------
    def consistency_job(self, progress=None, should_stop=None):
        """The job "score every section against a field trained without it" (one fit each);
        ``progress(dict)`` is called from the worker after each section."""
        from ..evaluate.checks import section_consistency

        stack, fit = self.stack, self.fitter(should_stop)

        def job():
            yield f"checking {len(stack)} sections: training without each in turn (0/{len(stack)})…"
            rows = section_consistency(stack, lambda st, secs: fit(st, secs), progress=progress,
                                       should_stop=should_stop)
            yield f"checked {len(rows)} sections"
            return rows

        return job

    @staticmethod
    def progress_text(p: dict) -> str:
        return f"checked {p['done']}/{p['total']} sections ({p['section']}: score {p['score']:.3f})"

    def set_consistency(self, rows) -> str:
        """Store the consistency rows; returns the status line (the outlier sections)."""
        self.consistency = rows
        self.consistency_changed.emit(rows)
        flagged = [r["name"] for r in rows if r["flagged"]]
        return "outlier sections: " + ", ".join(flagged) if flagged else "no outlier section"

    # --- uncertainty ---------------------------------------------------------------------------
    def uncertainty_job(self, should_stop=None, z: float | None = None):
        """The job "train a small ensemble, render its disagreement as a volume" (and as a plane
        at height ``z`` when given, so the UI thread only shows it)."""
        from ..evaluate.checks import UncertaintyField, fit_ensemble

        stack, k, masked, fit = self.stack, int(self.members), bool(self.inside_only), self.fitter(should_stop)

        def job():
            yield f"training {k} ensemble members"
            ens = fit_ensemble(stack, lambda st, secs, seed: fit(st, secs, seed, member=True), k=k)
            yield "rendering the uncertainty volume"
            return _render(ens, UncertaintyField(ens), masked, z)

        return job

    def rerender_job(self, z: float | None = None):
        """The job "render the uncertainty volume (and plane at ``z``) again" (the tissue mask was
        toggled; no training)."""
        ens, uf, masked = self.ensemble, self.uncertainty_field, bool(self.inside_only)

        def job():
            yield "rendering the uncertainty volume"
            return _render(ens, uf, masked, z)

        return job

    def set_uncertainty(self, result) -> str:
        """Store ``(ensemble, field, grid, volume[, plane])``; the volume's colour scale (1–99.5 %)
        becomes the shared one of volume and plane. Emits ``uncertainty_changed((grid, data,
        inside))`` with NaNs (outside tissue) set to the low end; returns the status line."""
        self.ensemble, self.uncertainty_field, grid, vol = result[:4]
        inside = np.isfinite(vol)
        lo, hi = np.percentile(vol[inside], [1, 99.5]) if inside.any() else (0.0, 1.0)
        self.uncertainty_contrast = (float(lo), float(hi if hi > lo else lo + 1e-6))
        data = np.where(inside, vol, np.float32(self.uncertainty_contrast[0])).astype(np.float32)
        self.uncertainty_changed.emit((grid, data, inside))
        return ("uncertainty: std across the ensemble in units of each gene's spread "
                f"(median {np.nanmedian(vol):.3f}, max {np.nanmax(vol):.3f}; plane at the current z, "
                "volume in 3D)")

    # --- domains -------------------------------------------------------------------------------
    def can_cluster(self) -> bool:
        return self.model is not None and hasattr(self.model, "latent")

    def domains_job(self):
        """The job "cluster the held-out field's latent features into 3D domains" on the core's
        default grid, with the ARI against ``labels_key`` on the held-out section."""
        from ..evaluate.checks import default_grid, domain_ari, domains_3d

        model, k, key = self.model, int(self.n_domains), self.labels_key
        grid = default_grid(model, self.stack, n_xy=DOMAINS_N_XY)
        section = self.stack[self.holdout] if self.holdout is not None else None

        def job():
            yield f"clustering the field's latent features into {k} domains"
            dom = domains_3d(model, grid, k=k)
            dom.ari = None
            dom.labels_key = None
            if key and section is not None:
                dom.ari = domain_ari(model, dom, section, key)
                dom.labels_key = key
            return dom

        return job

    def set_domains(self, dom):
        self.domains = dom
        self.domains_changed.emit(dom)

    def domains_ari_text(self) -> str:
        dom = self.domains
        if dom is None or dom.ari is None:
            return ""
        return f"ARI vs '{dom.labels_key}' on {self.stack[self.holdout].name}: {dom.ari:.3f}"
