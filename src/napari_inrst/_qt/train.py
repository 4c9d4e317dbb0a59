"""Widget "Train": train the expression field on the stack in the viewer, in the background.

The widget only wires and shows; the run lives in the Qt-free view model
:class:`~napari_inrst.viewer.train_state.TrainState`. The fit runs in a child process at a lower
CPU priority (:mod:`napari_inrst.field.background`), relayed by a cancellable
:class:`~napari_inrst._qt.workers.Job` (napari ``thread_worker``); a small plot shows the training loss and
the validation error live (:mod:`.train_plot`); every few seconds the child renders a preview of
the chosen gene at the viewer's current z, shown in the widget (a layer update would redraw the
whole canvas each time) and, when the fit ends (or live, with "Live preview in the canvas"), in an
Image layer. Cancel keeps the best weights so far (and a checkpoint); Resume continues from it.

The stack is prepared as ``napari-inrst fit`` does (the same default gene panel; the Genes
control sets another size). The trained :class:`~napari_inrst.field.model.FieldModel` is
handed over explicitly when a fit ends (:func:`napari_inrst.viewer.session.publish_field`; the View
widget listens), and kept as :attr:`TrainWidget.field` and in ``layer.metadata['inrst_field']``
of the preview layer; :func:`napari_inrst.viewer.session.find_field` finds it from any widget.

The UI thread only takes in progress records (appends, no drawing); a timer shows the newest one
a few times a second, so a fast worker cannot flood the event loop. The progress bar is the
widget's own (at most two updates a second): napari's activity-dock progress bar repainted the
whole window ~26 times a second while a job ran.
"""

# no "from __future__ import annotations" here: napari finds the viewer argument by its annotation

import tempfile
import threading
import time
from pathlib import Path

from napari.viewer import Viewer
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..stack.prepare import DEFAULT_GENE_CAP
from ..viewer.session import FIELD_KEY, find_field
from ..viewer.train_state import TrainState, end_message
from .common import GeneBox, find_stack
from .train_plot import LossPlot
from .train_preview import PreviewThumb, preview_layer, show_preview
from .train_settings import TrainSettings
from .workers import Job

__all__ = ["FIELD_KEY", "TrainWidget", "find_field"]


def _warm_imports():
    """Import what the widget needs on the UI side (torch for the returned model, the field
    package) on a background thread when the widget opens: an import holds the GIL for long
    stretches (torch's ~1 s)."""
    import contextlib

    with contextlib.suppress(Exception):
        import torch  # noqa: F401

        from ..field import background, model  # noqa: F401


class TrainWidget(QWidget):
    """Train the field on the stack in the viewer; live plot and preview; Cancel / Resume / Save."""

    #: how often the UI takes in the training progress (ms): the worker may report far more often
    UI_INTERVAL_MS = 250
    #: the widget's progress bar is updated at most this often (s)
    PBAR_INTERVAL_S = 0.5

    def __init__(self, viewer: Viewer):
        super().__init__()
        self.viewer = viewer
        self.extra_config: dict = {}  # advanced FieldConfig overrides (e.g. from scripts/tests)
        self._pbar_shown = 0.0
        self._stack = None
        self._ckpt_dir = Path(tempfile.mkdtemp(prefix="inrst-train-"))
        self.state = TrainState(self._ckpt_dir / "train.ckpt")
        self.job = Job("training", on_progress=self.state.take, on_done=self._on_done,
                       on_error=self.state.failed, on_finish=self._on_finished, quit_on_cancel=False)

        self.settings = TrainSettings()
        s = self.settings
        self.steps, self.genes, self.encoding, self.rank = s.steps, s.genes, s.encoding, s.rank
        self.lambda_rc, self.lambda_kl, self.seed, self.device = s.lambda_rc, s.lambda_kl, s.seed, s.device
        self.deform = s.deform  # "deform sections": as `napari-inrst fit --deform`
        self.gene = GeneBox()
        self.gene.geneChanged.connect(lambda g: self.state.set_preview(gene=g))
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
        # room for the end message from the start: a status line that wraps onto more lines would
        # grow the dock, which resizes the canvas and redraws it (software GL: 50–150 ms a time)
        self.status.setMinimumHeight(5 * self.status.fontMetrics().lineSpacing())
        self.status.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.plot = LossPlot(self.state.series)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("")
        self.state.status.connect(lambda text: self.status.setText(text))
        self.state.running.connect(self._set_running)

        self.thumb = PreviewThumb()
        self.live_canvas = QCheckBox("Live preview in the canvas")
        self.live_canvas.setToolTip("Also update the 'Field preview' layer while training: each update redraws "
                                    "the whole canvas (slow without a GPU). It is shown there when the fit ends.")
        preview = QFormLayout()
        preview.addRow("Preview gene", self.gene)
        preview.addRow(self.thumb)
        preview.addRow(self.live_canvas)
        buttons = QHBoxLayout()
        for b in (self.train_btn, self.cancel_btn, self.resume_btn):
            buttons.addWidget(b)
        lay = QVBoxLayout(self)
        for item in (self.settings, preview, buttons, self.progress, self.plot, self.status, self.save_btn):
            (lay.addLayout if isinstance(item, QHBoxLayout | QFormLayout) else lay.addWidget)(item)
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
        return self.job.running

    @property
    def worker(self):
        return self.job.worker

    @property
    def field(self):
        return self.state.field

    @property
    def history(self) -> list[dict]:
        return self.state.history

    @property
    def checkpoint(self) -> Path:
        return self.state.checkpoint

    def config(self):
        return self.settings.config(self.extra_config)

    def gene_setting(self) -> int | None:
        """The Genes control: None = the CLI's default rule, else the number of genes."""
        return self.settings.gene_setting()

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
            self.state.set_preview(gene=g)
            n = stack.n_genes
            modeled = f"up to {DEFAULT_GENE_CAP:,} modeled by default" if n > DEFAULT_GENE_CAP else "all modeled"
            self.status.setText(f"{len(stack.training_sections())} sections to train on, {n:,} genes ({modeled}).")
        self._set_running(self.running)

    def _stack_changed(self, stack):
        self.state.stack_changed(stack)
        self._stack = None
        self.refresh()

    def _set_running(self, running: bool):
        has = self._stack is not None
        self.train_btn.setEnabled(has and not running)
        self.cancel_btn.setEnabled(running)
        self.resume_btn.setEnabled(has and not running and self.state.can_resume(self._stack))
        self.save_btn.setEnabled(self.field is not None and not running)

    def _dims_changed(self, *_):
        pt = self.viewer.dims.point
        self.state.set_preview(z=float(pt[0]) if len(pt) >= 3 else 0.0)

    # --- run ------------------------------------------------------------------------------
    def start(self, resume: bool = False):
        """Start training (or resume from the last checkpoint) in the background; returns the worker."""
        if self.running or self._stack is None:
            return None
        stack = self._stack
        args = self.state.begin(stack, self.config(), self.gene_setting(), resume=resume,
                                deform=self.deform.isChecked())
        if self.state.previews.gene:  # in place now (empty): the end of the fit only fills it
            preview_layer(self.viewer, create_for=stack)
        self._show_progress(0, 1, "preparing…")
        self._pbar_shown = 0.0
        self._ui_timer.start()
        return self.job.start(self.state.work, *args)

    def cancel(self):
        """Stop at the next step, keeping the best weights so far and a checkpoint to resume from."""
        self.state.cancel()
        self.job.cancel()

    def _show_progress(self, step: int, total: int, text: str):
        """The widget's own progress bar (a small widget: only it repaints)."""
        bar = self.progress
        total = max(int(total), 1)
        if bar.maximum() != total:
            bar.setRange(0, total)
        bar.setValue(min(int(step), total))
        if bar.format() != text:
            bar.setFormat(text)

    def _update_ui(self):
        """A few times a second: status line, plot and preview from the newest record; the
        progress bar at most every ``PBAR_INTERVAL_S``."""
        d = self.state.latest
        now = time.monotonic()
        if d is not None and now - self._pbar_shown >= self.PBAR_INTERVAL_S:
            self._pbar_shown = now
            phase = d.get("phase", "")
            self._show_progress(d["step"], d["total"], f"%v / %m steps{' · ' + phase if phase else ''}")
        d, pv = self.state.tick()
        if d is not None:
            self.plot.update()
        if pv is not None:
            self.thumb.show_preview(pv)
            if self.live_canvas.isChecked():
                show_preview(self.viewer, pv)

    def _on_done(self, result):
        field, pv = self.state.finish(result)
        self.thumb.show_preview(pv)
        show_preview(self.viewer, pv, field)
        planned = field.provenance.get("steps_planned")
        if field.provenance.get("cancelled"):
            self.progress.setFormat("%v / %m steps · cancelled")
        elif planned:  # the final run stops at the selected step: the plan is done
            self._show_progress(planned, planned, "%v / %m steps · done")
        from ..viewer.session import publish_field

        publish_field(self.viewer, field, "Train")  # the View widget shows it at once

    end_message = staticmethod(end_message)

    def _on_finished(self):
        self._ui_timer.stop()
        if self.progress.value() < self.progress.maximum() and "·" not in self.progress.format():
            self.progress.setFormat("%v / %m steps · stopped")  # (an error: no result came)
        self.state.ended()

    def _save_dialog(self):
        if self.field is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save model", "field.inrst", "napari-inrst model (*.inrst)")
        if path:
            self.field.save(path)
            self.status.setText(f"Saved {path}")
