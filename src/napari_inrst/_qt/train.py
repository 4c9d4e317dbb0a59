"""Widget "Train": train the expression field on the stack in the viewer, in the background.

Training runs in a ``napari.qt.threading`` generator worker (napari progress bar in the activity
dock); a small Qt-drawn plot shows the training loss and the validation error live; every few
seconds the worker renders a preview of the chosen gene at the viewer's current z into an Image
layer. Cancel keeps the best weights so far (and a checkpoint); Resume continues from it.

The trained :class:`~napari_inrst.field.model.FieldModel` is stored in
``layer.metadata['inrst_field']`` of the preview layer and as :attr:`TrainWidget.field`;
:func:`find_field` finds it from any widget.
"""

import math
import tempfile
import time
from pathlib import Path

import numpy as np
from qtpy.QtCore import QPointF, Qt
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

from ..field.config import FieldConfig
from .common import GeneBox, find_stack

FIELD_KEY = "inrst_field"
PREVIEW_PIXELS = 128  # along the longer side
PREVIEW_SECONDS = 3.0


def find_field(viewer):
    """The most recently added trained field in the viewer (``layer.metadata['inrst_field']``), or None."""
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
    """Training loss (line) and validation error (dots) against step, log-scaled y, drawn with QPainter."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumHeight(120)
        self.loss: list[tuple[int, float]] = []
        self.val: list[tuple[int, float]] = []

    def clear(self):
        self.loss.clear()
        self.val.clear()
        self.update()

    def add(self, step: int, loss: float | None, val: float | None):
        if loss is not None and math.isfinite(loss) and loss > 0:
            self.loss.append((step, loss))
        if val is not None and math.isfinite(val) and val > 0:
            self.val.append((step, val))
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
        s_max = max(s for s, _ in pts) or 1
        ly = [math.log10(v) for _, v in pts]
        lo, hi = min(ly), max(ly)
        if hi - lo < 1e-6:
            lo, hi = lo - 0.5, hi + 0.5

        def xy(s, v):
            return QPointF(m + (w - 2 * m) * s / s_max, h - m - (h - 2 * m) * (math.log10(v) - lo) / (hi - lo))

        p.setPen(QPen(QColor(90, 170, 255), 1.5))
        p.drawPolyline(QPolygonF([xy(s, v) for s, v in self.loss]))
        p.setPen(QPen(QColor(255, 170, 60), 1.5))
        p.setBrush(QColor(255, 170, 60))
        for s, v in self.val:
            p.drawEllipse(xy(s, v), 2.5, 2.5)
        p.setPen(QColor(200, 200, 200))
        last = f"loss {self.loss[-1][1]:.3f}" if self.loss else ""
        if self.val:
            last += f"   val {self.val[-1][1]:.3f}"
        p.drawText(m + 2, m + 12, last)
        p.end()


class TrainWidget(QWidget):
    """Train the field on the stack in the viewer; live plot and preview; Cancel / Resume / Save."""

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
        self.history: list[dict] = []

        defaults = FieldConfig()
        self.steps = QSpinBox(minimum=10, maximum=200000, singleStep=100, value=defaults.steps)
        self.encoding = QComboBox()
        self.encoding.addItems(["fourier", "hash"])
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
        viewer.layers.events.inserted.connect(self.refresh)
        viewer.layers.events.removed.connect(self.refresh)
        viewer.dims.events.point.connect(self._dims_changed)
        self._dims_changed()
        self.refresh()
        self._set_running(False)

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
            from ..layers import default_gene

            g = default_gene(stack)
            self.gene.set_genes(stack.genes, g)
            self._gene = g
            self.status.setText(f"{len(stack.training_sections())} sections to train on, {stack.n_genes} genes.")
        self._set_running(self.running)

    def _set_running(self, running: bool):
        has = self._stack is not None
        self.train_btn.setEnabled(has and not running)
        self.cancel_btn.setEnabled(running)
        self.resume_btn.setEnabled(has and not running and self.checkpoint.exists())
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
                  device=self.device.currentText(), checkpoint_every=100)
        kw.update(self.extra_config)
        return FieldConfig(**kw)

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
        self._stop = False
        self._last_preview = 0.0
        if not resume:
            self.plot.clear()
            self.history.clear()
        if self._gene:
            self._preview_layer(create_for=(stack, stack.training_sections()))
        self._pbar = progress(total=cfg.steps, desc="Training field")
        self.worker = create_worker(self._work, stack, cfg, resume_path, _start_thread=False)
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(self._on_done)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self._set_running(True)
        self.status.setText("Resuming…" if resume_path else "Preparing…")
        self.worker.start()
        return self.worker

    def cancel(self):
        """Stop at the next step, keeping the best weights so far and a checkpoint to resume from."""
        if self.running:
            self._stop = True
            self.status.setText("Stopping…")

    def _work(self, stack, cfg, resume_path):
        """Worker generator (background thread): training progress + previews; returns (field, preview)."""
        from ..field.train import iter_fit

        gen = iter_fit(stack, cfg, should_stop=lambda: self._stop, checkpoint=self.checkpoint, resume=resume_path)
        while True:
            try:
                d = next(gen)
            except StopIteration as stop:
                field = stop.value
                return field, self._preview(field)
            snap = d.pop("snapshot", None)
            now = time.monotonic()
            if snap is not None and self._gene and now - self._last_preview >= PREVIEW_SECONDS:
                self._last_preview = now
                d["preview"] = self._preview(snap())
            yield d

    def _preview(self, field):
        gene, z = self._gene, self._z
        if not gene or gene not in field.genes:
            return None
        img, scale, translate = preview_plane(field, gene, z)
        return {"image": img, "scale": scale, "translate": translate, "gene": gene, "z": z}

    def _on_progress(self, d: dict):
        self.history.append({k: v for k, v in d.items() if k != "preview"})
        self.plot.add(d["step"], d.get("loss"), d.get("val"))
        if self._pbar is not None:
            if self._pbar.total != d["total"]:
                self._pbar.total = d["total"]
            inc = d["step"] - self._pbar.n
            if inc > 0:
                self._pbar.update(inc)
            self._pbar.set_description(f"Training field ({d.get('phase', '')})")
        eta = f", about {d['eta_s']:.0f} s left" if d.get("eta_s") is not None else ""
        best = f", best validation RMSE {d['best_val']:.4f}" if d.get("best_val") is not None else ""
        self.status.setText(f"{d.get('phase', '')}: step {d['step']}/{d['total']}{best}{eta}")
        if d.get("preview") is not None:
            self._show_preview(d["preview"], None)

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
                                          metadata={"inrst_preview": True}, units="µm")
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
                                          metadata={"inrst_preview": True}, units="µm")
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

    def _on_done(self, result):
        field, pv = result
        self.field = field
        if pv is not None:
            self._show_preview(pv, field)
        else:
            layer = next((lyr for lyr in self.viewer.layers if lyr.metadata.get("inrst_preview")), None)
            if layer is not None:
                layer.metadata[FIELD_KEY] = field
        prov = field.provenance
        verb = "Stopped" if prov.get("cancelled") else "Trained"
        from ..field.report import format_validation, validation_warning

        v = getattr(field, "validation", None)
        warn = validation_warning(v)
        self.status.setText(f"{verb}: {len(field.genes)} genes, {prov.get('steps_run')} steps, "
                            f"{prov.get('fit_seconds', 0):.0f} s on {prov.get('device')}.\n{format_validation(v)}"
                            + (f"\nWarning: {warn}" if warn else ""))

    def _on_error(self, exc):
        from napari.utils.notifications import show_error

        self.status.setText(f"Training failed: {exc}")
        show_error(f"Training failed: {exc}")

    def _on_finished(self):
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self.worker = None
        self._set_running(False)

    def _save_dialog(self):
        if self.field is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save model", "field.inrst", "napari-inrst model (*.inrst)")
        if path:
            self.field.save(path)
            self.status.setText(f"Saved {path}")
