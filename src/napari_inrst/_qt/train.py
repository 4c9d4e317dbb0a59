"""Widget "Train": train the expression field on the stack in the viewer, in the background.

Training runs in a ``napari.qt.threading`` generator worker (napari progress bar in the activity
dock); a small Qt-drawn plot shows the training loss and the validation error live; every few
seconds the worker renders a preview of the chosen gene at the viewer's current z into an Image
layer. Cancel keeps the best weights so far (and a checkpoint); Resume continues from it.

The stack is prepared as ``napari-inrst fit`` does (:func:`napari_inrst.stack.prepare.prepare_for_field`:
the same default gene panel; the Genes control sets another size). The trained
:class:`~napari_inrst.field.model.FieldModel` is handed over explicitly when a fit ends
(:func:`napari_inrst.viewer.session.publish_field`; the View widget listens), and kept as
:attr:`TrainWidget.field` and in ``layer.metadata['inrst_field']`` of the preview layer;
:func:`find_field` finds it from any widget.

The UI thread only takes in progress records (appends, no drawing); a timer shows the newest one
a few times a second, so a fast worker cannot flood the event loop.
"""

import math
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from qtpy.QtCore import QPointF, Qt, QTimer
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari.viewer import Viewer

from ..field import encodings
from ..field.config import FieldConfig
from ..stack.prepare import DEFAULT_GENE_CAP, TOP_EXPRESSED
from .common import GeneBox, find_stack

FIELD_KEY = "inrst_field"
PREVIEW_PIXELS = 128  # along the longer side
PREVIEW_SECONDS = 3.0


def find_field(viewer):
    """The viewer's current field: the one last handed over (:mod:`napari_inrst.viewer.session`), else
    the most recently added one in a layer's metadata (``layer.metadata['inrst_field']``), or None."""
    from ..viewer.session import current_field

    f = current_field(viewer)
    if f is not None:
        return f
    for layer in reversed(list(viewer.layers)):
        f = getattr(layer, "metadata", {}).get(FIELD_KEY)
        if f is not None:
            return f
    return None


def preview_grid(lo, hi, pixels: int = PREVIEW_PIXELS):
    """Plane grid over the x/y bounds: (xs, ys, scale (dy, dx), translate (y0, x0))."""
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    ext = np.maximum(hi[:2] - lo[:2], 1e-6)
    step = float(ext.max()) / max(pixels - 1, 1)
    nx, ny = int(ext[0] / step) + 1, int(ext[1] / step) + 1
    return lo[0] + step * np.arange(nx), lo[1] + step * np.arange(ny), (step, step), (float(lo[1]), float(lo[0]))


def preview_plane(field, gene: str, z: float, pixels: int = PREVIEW_PIXELS):
    """The field's ``gene`` on a plane at ``z`` over its x/y bounds → (image (ny, nx), scale, translate).

    Image axes (y, x); outside tissue (occupancy < 0.5) is NaN. Runs the trunk: call it off the
    UI thread for large ``pixels``.
    """
    lo, hi = field.bounds()
    xs, ys, scale, translate = preview_grid(lo, hi, pixels)
    gx, gy = np.meshgrid(xs, ys)
    xyz = np.column_stack([gx.ravel(), gy.ravel(), np.full(gx.size, float(z))])
    g = field.gene_indices([gene])
    img = field.decode(field.latent(xyz), g)[:, 0]
    img = np.where(field.occupancy(xyz) >= 0.5, img, np.nan).astype(np.float32)
    return img.reshape(len(ys), len(xs)), scale, translate


class LossPlot(QWidget):
    """Training loss (line) and validation error (dots) against step, log-scaled y, drawn with
    QPainter. Each phase of a fit (the selection run, the final run) is its own segment,
    marked by a vertical line and a label: a restart is shown as a new phase, not a saw-tooth.
    Points are added cheaply; the widget repaints when :meth:`update` is called (the Train
    widget does so a few times a second)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumHeight(130)
        self.loss: list[tuple[int, float]] = []
        self.val: list[tuple[int, float]] = []
        self.phases: list[tuple[int, str]] = []  # (first step, label)
        self._phase_of_loss: list[int] = []
        self.total = 0

    def clear(self):
        self.loss.clear()
        self.val.clear()
        self.phases.clear()
        self._phase_of_loss.clear()
        self.total = 0
        self.update()

    def add(self, step: int, loss: float | None, val: float | None, *, phase: str = "", phase_start: int | None = None,
            total: int | None = None, repaint: bool = True):
        if phase and (not self.phases or self.phases[-1][1] != phase):
            self.phases.append((int(phase_start if phase_start is not None else step), phase))
        if total:
            self.total = int(total)
        if loss is not None and math.isfinite(loss) and loss > 0:
            self.loss.append((step, loss))
            self._phase_of_loss.append(len(self.phases) - 1)
        if val is not None and math.isfinite(val) and val > 0:
            self.val.append((step, val))
        if repaint:
            self.update()

    def paintEvent(self, event):  # noqa: N802 (Qt)
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), QColor(30, 30, 36))
        pts = self.loss + self.val
        w, h, m = self.width(), self.height(), 6
        p.setPen(QColor(170, 170, 170))
        if len(pts) < 2:
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "loss / validation")
            p.end()
            return
        s_max = max(self.total, max(s for s, _ in pts)) or 1
        ly = [math.log10(v) for _, v in pts]
        lo, hi = min(ly), max(ly)
        if hi - lo < 1e-6:
            lo, hi = lo - 0.5, hi + 0.5

        def xy(s, v):
            return QPointF(m + (w - 2 * m) * s / s_max, h - m - (h - 2 * m) * (math.log10(v) - lo) / (hi - lo))

        # phase boundaries and labels
        p.setPen(QPen(QColor(110, 110, 120), 1, Qt.PenStyle.DashLine))
        for k, (s0, label) in enumerate(self.phases):
            x = m + (w - 2 * m) * s0 / s_max
            if k > 0:
                p.drawLine(QPointF(x, m), QPointF(x, h - m))
        p.setPen(QPen(QColor(90, 170, 255), 1.5))
        for k in sorted(set(self._phase_of_loss)):
            seg = [xy(s, v) for (s, v), ph in zip(self.loss, self._phase_of_loss) if ph == k]
            if len(seg) > 1:
                p.drawPolyline(QPolygonF(seg))
        p.setPen(QPen(QColor(255, 170, 60), 1.5))
        p.setBrush(QColor(255, 170, 60))
        for s, v in self.val:
            p.drawEllipse(xy(s, v), 2.5, 2.5)
        p.setPen(QColor(200, 200, 200))
        last = f"loss {self.loss[-1][1]:.3f}" if self.loss else ""
        if self.val:
            last += f"   val {self.val[-1][1]:.3f}"
        if self.phases:
            last += f"   [{self.phases[-1][1]}]"
        p.drawText(m + 2, m + 12, last)
        p.end()


def _warm_imports():
    """Import what training needs (torch, scipy.spatial, the field package) on a background
    thread when the widget opens: an import holds the GIL for long stretches (torch's ~1 s), and
    done by the training worker it froze the UI for 0.3–0.4 s at a time."""
    import contextlib

    with contextlib.suppress(Exception):
        import scipy.spatial  # noqa: F401
        import torch  # noqa: F401

        from ..field import data, fit, model  # noqa: F401


class TrainWidget(QWidget):
    """Train the field on the stack in the viewer; live plot and preview; Cancel / Resume / Save."""

    #: how often the UI takes in the training progress (ms): the worker may report far more often
    UI_INTERVAL_MS = 250

    def __init__(self, viewer: Viewer):
        super().__init__()
        self.viewer = viewer
        self.field = None
        self.worker = None
        self.extra_config: dict = {}  # advanced FieldConfig overrides (e.g. from scripts/tests)
        self._stop = False
        self._pbar = None
        self._z = 0.0
        self._gene = ""
        self._last_preview = 0.0
        self._ckpt_dir = Path(tempfile.mkdtemp(prefix="inrst-train-"))
        self.checkpoint = self._ckpt_dir / "train.ckpt"
        self._stack = None
        self._prepared = None  # (stack, genes setting, stack actually trained on): Resume reuses it
        self.history: list[dict] = []
        self._run = 0  # id of the current run: signals of an older worker are ignored
        self._latest = None  # newest progress record not yet shown
        self._pending_preview = None
        self._status_msg = ""  # what the worker is doing between progress records
        self._t_start = 0.0
        self._run_records = 0  # progress records of the current run
        self._status_seen = ""

        defaults = FieldConfig()
        self.steps = QSpinBox(minimum=10, maximum=200000, singleStep=100, value=defaults.steps)
        self.steps.setToolTip("training steps of each network: a selection run (validated on held-out "
                              "data), then the final run up to the selected step; the bar shows the whole plan")
        self.genes = QSpinBox(minimum=0, maximum=100000, singleStep=100, value=0)
        self.genes.setSpecialValueText(f"auto (≤ {DEFAULT_GENE_CAP:,})")
        self.genes.setToolTip(f"genes the field models: auto = all up to {DEFAULT_GENE_CAP:,} (as "
                              f"`napari-inrst fit`); N = the {TOP_EXPRESSED} most expressed + most variable, "
                              "N in all. Fewer genes train faster.")
        self.encoding = QComboBox()
        self.encoding.addItems(list(encodings.names()))
        self.rank = QSpinBox(minimum=0, maximum=512, value=0)
        self.rank.setSpecialValueText("auto")
        self.lambda_rc = QDoubleSpinBox(minimum=0.0, maximum=10.0, singleStep=0.05, decimals=3,
                                        value=defaults.lambda_rc)
        self.lambda_kl = QDoubleSpinBox(minimum=0.0, maximum=10.0, singleStep=0.01, decimals=3,
                                        value=defaults.lambda_kl)
        self.seed = QSpinBox(minimum=0, maximum=2 ** 31 - 1, value=0)
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda"])
        self.gene = GeneBox()
        self.gene.geneChanged.connect(self._gene_changed)
        self.train_btn = QPushButton("Train")
        self.cancel_btn = QPushButton("Cancel")
        self.resume_btn = QPushButton("Resume")
        self.save_btn = QPushButton("Save model…")
        self.train_btn.clicked.connect(lambda: self.start())
        self.cancel_btn.clicked.connect(self.cancel)
        self.resume_btn.clicked.connect(lambda: self.start(resume=True))
        self.save_btn.clicked.connect(self._save_dialog)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.plot = LossPlot()

        form = QFormLayout()
        form.addRow("Genes", self.genes)
        form.addRow("Steps", self.steps)
        form.addRow("Encoding", self.encoding)
        form.addRow("Latent rank", self.rank)
        form.addRow("λ consistency", self.lambda_rc)
        form.addRow("λ KL", self.lambda_kl)
        form.addRow("Seed", self.seed)
        form.addRow("Device", self.device)
        form.addRow("Preview gene", self.gene)
        buttons = QHBoxLayout()
        for b in (self.train_btn, self.cancel_btn, self.resume_btn):
            buttons.addWidget(b)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addLayout(buttons)
        lay.addWidget(self.plot)
        lay.addWidget(self.status)
        lay.addWidget(self.save_btn)
        lay.addStretch(1)
        self._ui_timer = QTimer(self)
        self._ui_timer.setInterval(self.UI_INTERVAL_MS)
        self._ui_timer.timeout.connect(self._update_ui)
        viewer.layers.events.inserted.connect(self.refresh)
        viewer.layers.events.removed.connect(self.refresh)
        viewer.dims.events.point.connect(self._dims_changed)
        from ..viewer.session import field_session

        field_session(viewer).stack_changed.connect(self._stack_changed)
        self._dims_changed()
        self.refresh()
        self._set_running(False)
        threading.Thread(target=_warm_imports, name="inrst-warm-imports", daemon=True).start()

    # --- state ----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.worker is not None

    def refresh(self, *_):
        stack = find_stack(self.viewer)
        if stack is self._stack:
            return
        self._stack = stack
        if stack is None:
            self.status.setText("No sections loaded: open sections or a sample first.")
            self.gene.set_genes([])
        else:
            from ..viewer.layers import default_gene

            g = default_gene(stack)
            self.gene.set_genes(stack.genes, g)
            self._gene = g
            n = stack.n_genes
            modeled = f"up to {DEFAULT_GENE_CAP:,} modeled by default" if n > DEFAULT_GENE_CAP else "all modeled"
            self.status.setText(f"{len(stack.training_sections())} sections to train on, {n:,} genes ({modeled}).")
        self._set_running(self.running)

    def _stack_changed(self, stack):
        """The stack's z / units / values changed in place: what was prepared for it is stale."""
        if self._prepared is not None and self._prepared[0] is stack:
            self._prepared = None
            if self.checkpoint.exists() and not self.running:
                self.checkpoint.unlink()
        self._stack = None
        self.refresh()

    def _set_running(self, running: bool):
        has = self._stack is not None
        self.train_btn.setEnabled(has and not running)
        self.cancel_btn.setEnabled(running)
        self.resume_btn.setEnabled(has and not running and self.checkpoint.exists() and self._prepared is not None)
        self.save_btn.setEnabled(self.field is not None and not running)

    def _dims_changed(self, *_):
        pt = self.viewer.dims.point
        self._z = float(pt[0]) if len(pt) >= 3 else 0.0
        self._last_preview = 0.0  # refresh at the next progress report

    def _gene_changed(self, gene):
        self._gene = gene
        self._last_preview = 0.0

    def config(self):
        from ..field.config import FieldConfig

        kw = dict(steps=self.steps.value(), encoding=self.encoding.currentText(), rank=self.rank.value(),
                  lambda_rc=self.lambda_rc.value(), lambda_kl=self.lambda_kl.value(), seed=self.seed.value(),
                  device=self.device.currentText(), checkpoint_every=100,
                  # one core stays free for the UI thread (training on every core starves it)
                  threads=max(1, (os.cpu_count() or 1) - 1))
        kw.update(self.extra_config)
        return FieldConfig(**kw)

    def gene_setting(self) -> int | None:
        """The Genes control: None = the CLI's default rule, else the number of genes."""
        return self.genes.value() or None

    # --- run ------------------------------------------------------------------------------
    def start(self, resume: bool = False):
        """Start training (or resume from the last checkpoint) in a background worker."""
        from napari.qt.threading import create_worker
        from napari.utils import progress

        if self.running or self._stack is None:
            return None
        stack = self._stack
        cfg = self.config()
        if not resume and self.checkpoint.exists():
            self.checkpoint.unlink()
        resume_path = self.checkpoint if resume and self.checkpoint.exists() else None
        prepared = None
        if resume_path is not None and self._prepared is not None and self._prepared[0] is stack:
            prepared = self._prepared[2]  # the genes the checkpoint was trained on
        elif resume_path is not None:
            resume_path = None  # the stack changed since: start afresh
        self._stop = False
        self._last_preview = 0.0
        self._run += 1
        run = self._run
        self._latest = None
        self._pending_preview = None
        self._status_msg = "choosing the genes to model" if prepared is None else "reading the checkpoint"
        self._t_start = time.monotonic()
        self._run_records = 0
        if not resume:
            self.plot.clear()
            self.history.clear()
        if self._gene:
            self._preview_layer(create_for=(stack, stack.training_sections()))
        self._pbar = progress(total=0, desc="Training field: preparing")
        self.worker = create_worker(self._work, stack, cfg, resume_path, prepared, self.gene_setting(),
                                    _start_thread=False)
        self.worker.yielded.connect(lambda d, r=run: self._on_progress(d, r))
        self.worker.returned.connect(lambda res, r=run: self._on_done(res, r))
        self.worker.errored.connect(lambda exc, r=run: self._on_error(exc, r))
        self.worker.finished.connect(lambda r=run: self._on_finished(r))
        self._set_running(True)
        self.status.setText("Resuming…" if resume_path else "Preparing…")
        self._ui_timer.start()
        self.worker.start()
        return self.worker

    def cancel(self):
        """Stop at the next step, keeping the best weights so far and a checkpoint to resume from."""
        if self.running:
            self._stop = True
            self.status.setText("Stopping… (keeping the best weights so far)")

    def _set_status_msg(self, msg: str):
        self._status_msg = msg  # read by the UI timer (a str assignment: safe across threads)

    def _work(self, stack, cfg, resume_path, prepared, genes):
        """Worker generator (background thread): preparation, training progress, previews;
        returns (field, preview, trained stack)."""
        from ..field.fit import iter_fit
        from ..stack.prepare import prepare_for_field

        if prepared is None:
            prepared = prepare_for_field(stack, genes, copy=True, log=self._set_status_msg)
        self._prepared = (stack, genes, prepared)
        # checkpoints (Resume) are for single-network fits: an ensemble's final run averages
        # several networks, which one checkpoint cannot hold
        ckpt = self.checkpoint if int(cfg.ensemble) <= 1 else None
        gen = iter_fit(prepared, cfg, should_stop=lambda: self._stop, checkpoint=ckpt,
                       resume=resume_path, on_status=self._set_status_msg)
        best_before = math.inf  # best validation of the phases before the current one
        phase, phase_best = None, math.inf
        while True:
            try:
                d = next(gen)
            except StopIteration as stop:
                field = stop.value
                return field, self._preview(field), prepared
            snap = d.pop("snapshot", None)
            if d.get("phase") != phase:
                best_before = min(best_before, phase_best)
                phase, phase_best = d.get("phase"), math.inf
            if d.get("best_val") is not None:
                phase_best = min(phase_best, d["best_val"])
            now = time.monotonic()
            # the preview follows the best network so far: a new phase (selection, final) restarts
            # from an untrained network and shows up only once it validates at least as well (the
            # final run has no validation: the selection's preview stays until the field is done)
            better = phase_best <= best_before
            if snap is not None and self._gene and better and now - self._last_preview >= PREVIEW_SECONDS:
                self._last_preview = now
                d["preview"] = self._preview(snap())
            yield d

    def _preview(self, field):
        gene, z = self._gene, self._z
        if not gene or gene not in field.genes:
            return None
        img, scale, translate = preview_plane(field, gene, z)
        return {"image": img, "scale": scale, "translate": translate, "gene": gene, "z": z}

    def _on_progress(self, d: dict, run: int | None = None):
        """A progress record (UI thread): kept, shown by the next UI tick (cheap here)."""
        if run is not None and run != self._run:
            return
        pv = d.pop("preview", None)
        self.history.append(d)
        self.plot.add(d["step"], d.get("loss"), d.get("val"), phase=d.get("phase", ""),
                      phase_start=d.get("phase_start"), total=d.get("total"), repaint=False)
        self._latest = d
        self._run_records += 1
        if pv is not None:
            self._pending_preview = pv

    def _update_ui(self):
        """A few times a second: progress bar, status line, plot and preview from the newest record."""
        pbar = self._pbar  # a local: a finished run may clear the attribute meanwhile
        d, self._latest = self._latest, None
        busy = False
        if d is None:
            if self.running and self._run_records == 0:
                el = time.monotonic() - self._t_start
                self.status.setText(f"Preparing ({el:.0f} s): {self._status_msg}…")
            elif self.running and self._status_msg != self._status_seen and not self._stop:
                self._status_seen = self._status_msg
                self.status.setText(f"{self._status_msg}…")
            pv, self._pending_preview = self._pending_preview, None
            if pv is not None:
                self._show_preview(pv, None)
            return
        self._status_seen = self._status_msg
        if pbar is not None:
            if pbar.total != d["total"]:
                pbar.total = d["total"]
            inc = d["step"] - pbar.n
            if inc > 0:
                pbar.update(inc)
            desc = f"Training field: {d.get('phase', '')}"
            if getattr(pbar, "desc", None) != desc:
                pbar.set_description(desc)  # napari re-lays out its activity dock: not with a preview
                busy = True
        eta = f", about {d['eta_s']:.0f} s left" if d.get("eta_s") is not None else ""
        best = f", best validation RMSE {d['best_val']:.4f}" if d.get("best_val") is not None else ""
        ph = ""
        if d.get("n_phases", 1) > 1:
            kind = {"selection": "selection", "final": "final fit", "members": "ensemble",
                    "fit": "fit"}.get(d.get("kind"), "")
            ph = f"phase {d['phase_index'] + 1}/{d['n_phases']} ({kind}) "
        self.status.setText(f"{ph}{d.get('phase', '')}: step {d['step']:,}/{d['total']:,}{best}{eta}")
        self.plot.update()
        if busy:
            return  # the preview waits for the next tick: one redraw of the dock or the canvas per tick
        pv, self._pending_preview = self._pending_preview, None
        if pv is not None:
            self._show_preview(pv, None)

    def _preview_layer(self, create_for=None):
        """The preview Image layer (created for ``create_for`` = (stack, sections) when missing)."""
        layer = next((lyr for lyr in self.viewer.layers if lyr.metadata.get("inrst_preview")), None)
        if layer is None and create_for is not None:
            stack, idx = create_for
            c = stack.coords(idx)
            xs, ys, scale, translate = preview_grid(c.min(0), c.max(0))
            layer = self.viewer.add_image(np.zeros((len(ys), len(xs)), np.float32), name="Field preview",
                                          scale=scale, translate=translate, colormap="magma",
                                          contrast_limits=(0.0, 1.0), blending="additive",
                                          metadata={"inrst_preview": True}, units="µm", axis_labels=("y", "x"))
        return layer

    def _show_preview(self, pv: dict, field):
        """Put a preview image into the layer (only what changed is set: cheap on the UI thread)."""
        layer = self._preview_layer()
        img = pv["image"]
        finite = img[np.isfinite(img)]
        clim = (float(np.percentile(finite, 1)), float(np.percentile(finite, 99.5))) if finite.size else (0.0, 1.0)
        if clim[1] <= clim[0]:
            clim = (clim[0], clim[0] + 1.0)
        name = f"Field preview: {pv['gene']}"
        if layer is None:
            layer = self.viewer.add_image(img, name=name, scale=pv["scale"], translate=pv["translate"],
                                          colormap="magma", contrast_limits=clim, blending="additive",
                                          metadata={"inrst_preview": True}, units="µm", axis_labels=("y", "x"))
        else:
            if not np.allclose(layer.scale, pv["scale"]):
                layer.scale = pv["scale"]
            if not np.allclose(layer.translate, pv["translate"]):
                layer.translate = pv["translate"]
            layer.data = img
            old = layer.contrast_limits
            span = max(old[1] - old[0], 1e-9)
            if abs(clim[0] - old[0]) > 0.1 * span or abs(clim[1] - old[1]) > 0.1 * span:
                layer.contrast_limits = clim
            if layer.name != name:
                layer.name = name
        layer.metadata["z_um"] = pv["z"]
        if field is not None:
            layer.metadata[FIELD_KEY] = field
        return layer

    def _on_done(self, result, run: int | None = None):
        if run is not None and run != self._run:
            return
        field, pv, _ = result
        self.field = field
        if pv is not None:
            self._show_preview(pv, field)
        else:
            layer = next((lyr for lyr in self.viewer.layers if lyr.metadata.get("inrst_preview")), None)
            if layer is not None:
                layer.metadata[FIELD_KEY] = field
        prov = field.provenance
        pbar = self._pbar
        if pbar is not None and prov.get("steps_planned"):
            pbar.total = prov["steps_planned"]
            if pbar.n < pbar.total:
                pbar.update(pbar.total - pbar.n)
        self._latest = self._pending_preview = None  # nothing older may replace the final preview
        self.status.setText(self.end_message(field))
        from ..viewer.session import publish_field

        publish_field(self.viewer, field, "Train")  # the View widget shows it at once

    @staticmethod
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

    def _on_error(self, exc, run: int | None = None):
        from napari.utils.notifications import show_error

        if run is not None and run != self._run:
            return
        self.status.setText(f"Training failed: {exc}")
        show_error(f"Training failed: {exc}")

    def _on_finished(self, run: int | None = None):
        if run is not None and run != self._run:
            return
        self._ui_timer.stop()
        pbar, self._pbar = self._pbar, None
        if pbar is not None:
            pbar.close()
        self.worker = None
        self._set_running(False)

    def _save_dialog(self):
        if self.field is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save model", "field.inrst", "napari-inrst model (*.inrst)")
        if path:
            self.field.save(path)
            self.status.setText(f"Saved {path}")
