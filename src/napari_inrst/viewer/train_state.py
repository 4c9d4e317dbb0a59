"""The Train widget without Qt: what a fit run is doing, in a form a widget only has to show.

:class:`TrainState` holds the run (the plan, the progress records, the loss/validation series
by phase, the best score, the status line, the preview request, Cancel, what Resume needs) and
runs the fit itself (:meth:`TrainState.work`, a generator for a background worker). By default the
fit runs in a child process (:class:`napari_inrst.field.background.ChildFit`): training shares
no interpreter lock and no CPU priority with the viewer's UI. Its preview — the chosen gene at
the viewer's z, following the best validated network — is rendered where the network lives
(:class:`PreviewMaker`, with :func:`napari_inrst.render.plane.render_plane`).

psygnal events: ``status(str)`` when the status line changes, ``running(bool)``, ``done(field)``
when a fit has ended with a field (finished or cancelled). Testable without Qt or napari.
"""

from __future__ import annotations

import math
import time

import numpy as np
from psygnal import Signal

PREVIEW_PIXELS = 128  # along the longer side
PREVIEW_SECONDS = 3.0


def preview_plane(field, gene: str, z: float, pixels: int = PREVIEW_PIXELS):
    """The field's ``gene`` at ``z`` over its x/y bounds → (image (ny, nx) float32, scale (dy, dx),
    translate (y0, x0)) for an Image layer; NaN outside tissue. Runs the trunk (not on a UI thread)."""
    from ..render.plane import plane_grid_for, render_plane

    grid = plane_grid_for(field, z, shape=pixels)
    img = render_plane(field, gene, z, shape=pixels)
    return np.asarray(img, dtype=np.float32), grid.scale, grid.translate


def preview_placement(lo, hi, pixels: int = PREVIEW_PIXELS):
    """(shape, scale, translate) of the preview over x/y bounds ``lo``/``hi`` (before a field exists)."""
    from ..render.grids import plane_from_extent, plane_shape_for

    ext = (float(lo[0]), float(max(hi[0], lo[0] + 1e-6)), float(lo[1]), float(max(hi[1], lo[1] + 1e-6)))
    g = plane_from_extent(0.0, ext, plane_shape_for(ext, pixels))
    return g.shape, g.scale, g.translate


def preview_contrast(img: np.ndarray, old=None) -> tuple[float, float] | None:
    """Contrast limits for a preview (1st–99.5th percentile); None when ``old`` is within 10 %
    of them (the layer keeps its limits: no flicker, no needless refresh)."""
    finite = img[np.isfinite(img)]
    clim = (float(np.percentile(finite, 1)), float(np.percentile(finite, 99.5))) if finite.size else (0.0, 1.0)
    if clim[1] <= clim[0]:
        clim = (clim[0], clim[0] + 1.0)
    if old is not None:
        span = max(old[1] - old[0], 1e-9)
        if abs(clim[0] - old[0]) <= 0.1 * span and abs(clim[1] - old[1]) <= 0.1 * span:
            return None
    return clim


class PreviewMaker:
    """Renders the preview of a running fit (where the network is: the child process, or the
    worker thread). At most every ``every_s`` seconds; it follows the best network so far: a new
    phase (selection, final) restarts from an untrained network and is shown only once it
    validates at least as well (the final run has no validation: the selection's preview stays
    until the field is done). Picklable; :meth:`update` takes a new gene or z."""

    def __init__(self, gene: str = "", z: float = 0.0, every_s: float = PREVIEW_SECONDS,
                 pixels: int = PREVIEW_PIXELS):
        self.gene, self.z, self.every_s, self.pixels = gene, float(z), float(every_s), int(pixels)
        self.new_run()

    def new_run(self):
        self._last = 0.0
        self._phase, self._phase_best, self._best_before = None, math.inf, math.inf

    def update(self, gene: str | None = None, z: float | None = None):
        if gene is not None:
            self.gene = gene
        if z is not None:
            self.z = float(z)
        self._last = 0.0  # render at the next record

    def render(self, field) -> dict | None:
        gene, z = self.gene, self.z
        if not gene or gene not in field.genes:
            return None
        img, scale, translate = preview_plane(field, gene, z, self.pixels)
        return {"image": img, "scale": scale, "translate": translate, "gene": gene, "z": z}

    def __call__(self, d: dict, snapshot) -> dict:
        if d.get("phase") != self._phase:
            self._best_before = min(self._best_before, self._phase_best)
            self._phase, self._phase_best = d.get("phase"), math.inf
        if d.get("best_val") is not None:
            self._phase_best = min(self._phase_best, d["best_val"])
        now = time.monotonic()
        better = self._phase_best <= self._best_before
        if snapshot is None or not self.gene or not better or now - self._last < self.every_s:
            return {}
        self._last = now
        pv = self.render(snapshot())
        return {} if pv is None else {"preview": pv}

    def final(self, field) -> dict:
        return {"preview": self.render(field)}


class LossSeries:
    """The training loss and validation error against step, each phase of a fit (selection,
    final run) its own segment — a restart is a new phase, not a saw-tooth."""

    def __init__(self):
        self.loss: list[tuple[int, float]] = []
        self.val: list[tuple[int, float]] = []
        self.phases: list[tuple[int, str]] = []  # (first step, label)
        self.phase_of_loss: list[int] = []
        self.total = 0

    def clear(self):
        self.loss.clear(), self.val.clear(), self.phases.clear(), self.phase_of_loss.clear()
        self.total = 0

    def add(self, step: int, loss: float | None, val: float | None, *, phase: str = "",
            phase_start: int | None = None, total: int | None = None):
        if phase and (not self.phases or self.phases[-1][1] != phase):
            self.phases.append((int(phase_start if phase_start is not None else step), phase))
        if total:
            self.total = int(total)
        if loss is not None and math.isfinite(loss) and loss > 0:
            self.loss.append((step, loss))
            self.phase_of_loss.append(len(self.phases) - 1)
        if val is not None and math.isfinite(val) and val > 0:
            self.val.append((step, val))


def status_line(d: dict) -> str:
    """The status line for a progress record: phase k/n (kind), step of the plan, best, ETA."""
    eta = f", about {d['eta_s']:.0f} s left" if d.get("eta_s") is not None else ""
    best = f", best validation RMSE {d['best_val']:.4f}" if d.get("best_val") is not None else ""
    ph = ""
    if d.get("n_phases", 1) > 1:
        kind = {"selection": "selection", "final": "final fit", "members": "ensemble", "fit": "fit"}.get(d.get("kind"), "")
        ph = f"phase {d['phase_index'] + 1}/{d['n_phases']} ({kind}) "
    return f"{ph}{d.get('phase', '')}: step {d['step']:,}/{d['total']:,}{best}{eta}"


def end_message(field) -> str:
    """What the fit did, in numbers that add up with the progress bar."""
    prov = field.provenance
    verb = "Stopped" if prov.get("cancelled") else "Trained"
    planned, run_ = prov.get("steps_planned"), prov.get("steps_total_run")
    steps = f"{run_:,} of {planned:,} planned steps run" if planned else f"{prov.get('steps_run')} steps"
    if planned and run_ is not None and run_ < planned and not prov.get("cancelled"):
        steps += " (selection stops when validation stops improving, the final run at the selected step)"
    kept = f"; kept: {prov['kept']}" if prov.get("kept") else ""
    msg = (f"{verb}: {len(field.genes):,} genes, validation RMSE {prov.get('val_rmse', float('nan')):.4f}, "
           f"{steps}{kept}, {prov.get('fit_seconds', 0):.0f} s on {prov.get('device')}.")
    v = getattr(field, "validation", None)
    if v:  # the model against interpolation on the held-out split (field/report.py)
        from ..field.report import format_validation, validation_warning

        warn = validation_warning(v)
        msg += f"\n{format_validation(v)}" + (f"\nWarning: {warn}" if warn else "")
    return msg


class TrainState:
    """One Train widget's runs: call :meth:`begin` on the UI thread, run :meth:`work` in a
    background worker, feed what it yields to :meth:`take` and what it returns to :meth:`finish`;
    :meth:`tick` says what to show (a few times a second). ``in_child``: train in a child process
    (default; a stack that cannot be sent, e.g. a lazily read one, trains in the worker thread)."""

    status = Signal(str)
    running = Signal(bool)
    done = Signal(object)

    def __init__(self, checkpoint, *, in_child: bool = True, nice: int | None = None):
        from pathlib import Path

        self.checkpoint = Path(checkpoint)
        self.in_child = in_child
        self.nice = nice  # the child's niceness (None: field.background.CHILD_NICE)
        self.series = LossSeries()
        self.history: list[dict] = []
        self.previews = PreviewMaker()
        self.field = None
        self.prepared = None  # (stack, genes setting, genes trained on): what Resume reuses
        #: with "deform sections": where the last run placed the sections (field.background.placement_of),
        #: put back by Resume; ``_plan``: this run's {"deform": bool, "placement": dict or None}
        self.placement = None
        self._plan = {"deform": False, "placement": None}
        self.stop_requested = False
        self.is_running = False
        self._child = None
        self.latest = None  # newest progress record not yet shown
        self._pending_preview = None
        self._status_msg = ""  # what the fit is doing between progress records
        self._status_seen = ""
        self._t_start = 0.0
        self.records = 0  # progress records of the current run

    # --- requests from the UI ---------------------------------------------------------------
    def set_preview(self, gene: str | None = None, z: float | None = None):
        """A new preview gene / z: the next preview of the running fit shows it."""
        self.previews.update(gene, z)
        child = self._child
        if child is not None:
            child.send(**{k: v for k, v in (("gene", gene), ("z", z)) if v is not None})

    def can_resume(self, stack) -> bool:
        return self.checkpoint.exists() and self.prepared is not None and self.prepared[0] is stack

    def stack_changed(self, stack):
        """The stack's z / units / values changed in place: what was prepared for it is stale."""
        if self.prepared is not None and self.prepared[0] is stack:
            self.prepared = None
            if self.checkpoint.exists() and not self.is_running:
                self.checkpoint.unlink()

    def begin(self, stack, config, genes, resume: bool = False, deform: bool = False) -> tuple:
        """A new run (UI thread): resets what it shows; returns the arguments of :meth:`work`.
        ``deform``: first refine the alignment with a deformation per section, as ``napari-inrst
        fit --deform`` (a resumed run puts the sections back where its first part trained them)."""
        if not resume and self.checkpoint.exists():
            self.checkpoint.unlink()
        resume_path = self.checkpoint if resume and self.can_resume(stack) else None
        use = genes if resume_path is None else self.prepared[2]  # the genes the checkpoint was trained on
        if resume_path is None:
            self.placement = None
            self._plan = {"deform": bool(deform), "placement": None}
        else:
            self._plan = {"deform": False, "placement": self.placement}
        self.stop_requested = False
        self.previews.new_run()
        self.latest = self._pending_preview = None
        self._status_msg = "choosing the genes to model" if resume_path is None else "reading the checkpoint"
        self._status_seen = ""
        self._t_start = time.monotonic()
        self.records = 0
        if not resume:
            self.series.clear()
            self.history.clear()
        self.is_running = True
        self.running.emit(True)
        self.status.emit("Resuming…" if resume_path else "Preparing…")
        return stack, config, resume_path, use, genes

    def cancel(self):
        """Stop at the next step, keeping the best weights so far (and a checkpoint to resume from)."""
        if self.is_running:
            self.stop_requested = True
            self.status.emit("Stopping… (keeping the best weights so far)")

    def should_stop(self) -> bool:
        return self.stop_requested

    def _set_status_msg(self, msg: str):
        self._status_msg = msg  # read by tick() on the UI thread (a str assignment: thread-safe)

    # --- the fit (a worker thread) ----------------------------------------------------------
    def work(self, stack, config, resume_path, genes, setting):
        """Generator for a worker thread: prepares the stack (``genes``: None/int = the gene rule,
        a list = those genes), trains, yields progress records (with a ``preview`` now and then);
        returns (field, final preview or None)."""
        # checkpoints (Resume) are for single-network fits: an ensemble's final run averages
        # several networks, which one checkpoint cannot hold
        ckpt = self.checkpoint if int(config.ensemble) <= 1 else None

        def prepared(names):
            self.prepared = (stack, setting, list(names))

        from ..stack import SectionStack

        plan = dict(self._plan)
        if self.in_child and isinstance(stack, SectionStack):  # (a lazily read stack holds open files)
            from ..field.background import ChildFit

            nice = {} if self.nice is None else {"nice": int(self.nice)}
            fit = ChildFit(stack, config, genes=genes, checkpoint=ckpt, resume=resume_path, observer=self.previews,
                           **plan, **nice)
            self._child = fit
            try:
                field = yield from fit.run(should_stop=self.should_stop, on_status=self._set_status_msg,
                                           on_prepared=prepared)
            finally:
                self._child = None
            self.placement = fit.placement
            return field, fit.extras.get("preview")
        from ..field.background import placement_of, prepare_stack, record_refinement, refine_for_fit
        from ..field.fit import iter_fit

        train_on = prepare_stack(stack, genes, copy=True, log=self._set_status_msg)
        prepared(train_on.genes)
        refined = None
        if plan["deform"] or plan["placement"] is not None:
            refined = refine_for_fit(train_on, config, placement=plan["placement"], log=self._set_status_msg,
                                     should_stop=self.should_stop)
            self.placement = placement_of(train_on)
        gen = iter_fit(train_on, config, should_stop=self.should_stop, checkpoint=ckpt, resume=resume_path,
                       on_status=self._set_status_msg)
        while True:
            try:
                d = next(gen)
            except StopIteration as stop:
                record_refinement(stop.value, refined)
                return stop.value, self.previews.render(stop.value)
            d.update(self.previews(d, d.pop("snapshot", None)))
            yield d

    # --- results (UI thread) ----------------------------------------------------------------
    def take(self, d: dict):
        """A progress record: kept for the next :meth:`tick` (cheap)."""
        pv = d.pop("preview", None)
        self.history.append(d)
        self.series.add(d["step"], d.get("loss"), d.get("val"), phase=d.get("phase", ""),
                        phase_start=d.get("phase_start"), total=d.get("total"))
        self.latest = d
        self.records += 1
        if pv is not None:
            self._pending_preview = pv

    def tick(self, defer_preview: bool = False):
        """What to show now: (record or None, preview or None). The status line is emitted.
        ``defer_preview``: keep the preview for the next tick (one redraw per tick)."""
        d, self.latest = self.latest, None
        if d is None:
            if self.is_running and self.records == 0:
                self.status.emit(f"Preparing ({time.monotonic() - self._t_start:.0f} s): {self._status_msg}…")
            elif self.is_running and self._status_msg != self._status_seen and not self.stop_requested:
                self._status_seen = self._status_msg
                self.status.emit(f"{self._status_msg}…")
        else:
            self._status_seen = self._status_msg
            self.status.emit(status_line(d))
        if defer_preview:
            return d, None
        pv, self._pending_preview = self._pending_preview, None
        return d, pv

    def finish(self, result):
        """The fit's return value (finished or cancelled): the field and its final preview."""
        field, pv = result
        self.field = field
        self.latest = self._pending_preview = None  # nothing older may replace the final preview
        self.status.emit(end_message(field))
        self.done.emit(field)
        return field, pv

    def failed(self, exc):
        self.status.emit(f"Training failed: {exc}")

    def ended(self):
        """The worker has ended (after :meth:`finish` or :meth:`failed`)."""
        self.is_running = False
        self.running.emit(False)
