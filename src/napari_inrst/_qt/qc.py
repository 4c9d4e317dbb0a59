"""Widget "QC": hold a section out, train without it, and see where the field is right and where it guesses.

* pick a measured section to hold out (and tick sections as missing/damaged: excluded from
  training), train without them in the background (``thread_worker``, cancellable);
* side by side at that z: measured spots, the field's prediction and the residual for a gene
  (three Points layers, the prediction and residual shifted along x next to the measured one,
  titled in the canvas; measured and predicted share one colour scale, the residual is on a
  symmetric diverging scale with a dark centre);
* a sortable per-gene table (Pearson, RMSE, SSIM) of the held-out section; clicking a gene shows it;
* section overview: a z strip (sections as ticks, wide gaps shaded with their width, excluded /
  held-out / flagged sections coloured; click a tick to hold that section out) and a text list
  with every gap's width and, on demand, the per-section consistency score with outlier flags;
* uncertainty of the field (disagreement of a small deep ensemble, see
  :mod:`napari_inrst.evaluate.checks`), rendered like a gene: a plane at the current z (re-rendered when z
  moves) and a volume (shown in 3D), one shared colour scale;
* 3D domains (k-means of the field's latent features) as a Labels volume, with the ARI on the
  held-out section when an annotation column is chosen.
"""

import numpy as np
from qtpy.QtCore import QRectF, Qt, QTimer, Signal
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QHeaderView, QLabel,
                            QListWidget, QListWidgetItem, QPlainTextEdit, QPushButton, QSpinBox, QTableWidget,
                            QTableWidgetItem, QVBoxLayout, QWidget)

from napari.viewer import Viewer

from ..viewer.layers import SECTION_KEY
from ..render.display import labels_legend_html, result_on_top, show_own_colorbars
from .anndata_save import save_qc_dialog
from .common import GeneBox, find_stack

LAYER_MEASURED = "QC measured"
LAYER_PREDICTED = "QC predicted"
LAYER_RESIDUAL = "QC residual"
LAYER_TITLES = "QC titles"
LAYER_UNCERTAINTY = "QC uncertainty"  # the volume (3D display)
LAYER_UNCERTAINTY_PLANE = "QC uncertainty · plane"  # at the current z (2D display)
LAYER_DOMAINS = "QC domains"
COLUMNS = ("gene", "pearson", "rmse", "ssim")
#: smallest on-screen size (px) of a cell/spot in the side-by-side panels
MIN_POINT_PX = 4
#: pixels on the longer side of the uncertainty plane, voxels on the longest axis of its volume
UNCERTAINTY_PLANE_PX = 256
UNCERTAINTY_VOLUME_VOX = 64
#: residual colormap: blue (under-predicted) – dark grey (right) – orange (over-predicted);
#: a dark centre keeps good predictions quiet on napari's dark canvas
RESIDUAL_COLORS = [[0.25, 0.55, 1.0, 1.0], [0.22, 0.22, 0.22, 1.0], [1.0, 0.55, 0.1, 1.0]]


def residual_colormap():
    from napari.utils.colormaps import Colormap

    return Colormap(RESIDUAL_COLORS, name="inrst residual")


# colours of the z strip
STRIP_SECTION = QColor(230, 230, 230)
STRIP_EXCLUDED = QColor(110, 110, 110)
STRIP_HOLDOUT = QColor(0, 200, 255)
STRIP_FLAGGED = QColor(255, 60, 60)
STRIP_WIDE_GAP = QColor(255, 150, 0, 90)


class SectionStrip(QWidget):
    """The stack along z: a tick per measured section, wide gaps shaded and labelled with their
    width; excluded sections grey, the held-out one cyan, flagged outliers red. Clicking a tick
    emits ``sectionClicked(index)``."""

    sectionClicked = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumHeight(64)
        self.overview = None
        self.flagged: set[int] = set()
        self.holdout = None
        self.setToolTip("sections along z: grey = excluded, cyan = held out, red = flagged outlier; "
                        "shaded = wide gap (missing sections?). Click a section to hold it out.")

    def set_data(self, overview, flagged=(), holdout=None):
        self.overview = overview
        self.flagged = set(int(i) for i in flagged)
        self.holdout = holdout
        self.update()

    def _x(self, z):
        lo, hi = self.overview["z_range_um"]
        m = 24.0
        w = max(self.width() - 2 * m, 1.0)
        return m + (0.5 if hi <= lo else (z - lo) / (hi - lo)) * w

    def colour(self, index: int) -> QColor:
        sec = next(s for s in self.overview["sections"] if s["index"] == index)
        if index in self.flagged:
            return STRIP_FLAGGED
        if index == self.holdout:
            return STRIP_HOLDOUT
        return STRIP_EXCLUDED if sec["excluded"] else STRIP_SECTION

    def paintEvent(self, event):  # noqa: N802 - Qt name
        if not self.overview or not self.overview["sections"]:
            return
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        h = self.height()
        top, bottom = 16.0, h - 18.0
        p.fillRect(self.rect(), QColor(20, 20, 20))
        for g in self.overview["gaps"]:
            x0, x1 = self._x(g["z0"]), self._x(g["z1"])
            if g["wide"]:
                p.fillRect(QRectF(x0, top, x1 - x0, bottom - top), STRIP_WIDE_GAP)
            p.setPen(QColor(255, 170, 60) if g["wide"] else QColor(150, 150, 150))
            p.drawText(QRectF(x0, 0, x1 - x0, top), Qt.AlignmentFlag.AlignCenter, f"{g['width_um']:g}")
        p.setPen(QPen(QColor(120, 120, 120), 1))
        p.drawLine(int(self._x(self.overview["z_range_um"][0])), int(bottom),
                   int(self._x(self.overview["z_range_um"][1])), int(bottom))
        for s in self.overview["sections"]:
            x = self._x(s["z_um"])
            p.setPen(QPen(self.colour(s["index"]), 4))
            p.drawLine(int(x), int(top), int(x), int(bottom))
        p.setPen(QColor(170, 170, 170))
        lo, hi = self.overview["z_range_um"]
        p.drawText(QRectF(0, bottom, 48, 18), Qt.AlignmentFlag.AlignLeft, f"{lo:g}")
        p.drawText(QRectF(self.width() - 80, bottom, 80, 18), Qt.AlignmentFlag.AlignRight, f"{hi:g} µm")
        p.end()

    def index_at(self, x: float):
        if not self.overview or not self.overview["sections"]:
            return None
        best = min(self.overview["sections"], key=lambda s: abs(self._x(s["z_um"]) - x))
        return best["index"] if abs(self._x(best["z_um"]) - x) <= 8 else None

    def mousePressEvent(self, event):  # noqa: N802 - Qt name
        i = self.index_at(event.position().x() if hasattr(event, "position") else event.x())
        if i is not None:
            self.sectionClicked.emit(int(i))


class _NumItem(QTableWidgetItem):
    """A table cell that sorts by its number (NaN last)."""

    def __init__(self, value: float):
        super().__init__("–" if not np.isfinite(value) else f"{value:.3f}")
        self.value = float(value) if np.isfinite(value) else -np.inf

    def __lt__(self, other):
        if isinstance(other, _NumItem):
            return self.value < other.value
        return super().__lt__(other)


class QCWidget(QWidget):
    """Hold-out QC, section overview, uncertainty and 3D domains for the stack in the viewer."""

    progressMsg = Signal(str)  # emitted from workers, shown in the status line (queued to the UI thread)

    def _progress_msg(self, p: dict):
        self.progressMsg.emit(f"checked {p['done']}/{p['total']} sections ({p['section']}: score {p['score']:.3f})")

    def __init__(self, viewer: Viewer):
        super().__init__()
        from ..field import FieldConfig

        self.viewer = viewer
        self.stack = None
        self.model = None  # field trained without the held-out section
        self.holdout = None
        self.pred = None  # predictions at the held-out section's cells (all genes)
        self.rows = []  # per-gene scores
        self.consistency = None
        self.ensemble = None
        self.uncertainty_field = None
        self.uncertainty_contrast = None
        self.domains = None
        self.worker = None
        self._cancel = False
        self._plane_worker = None
        self._plane_pending = False
        self._steps = None
        #: seam: fit_fn(stack, sections, seed=0) -> field with .predict(xyz) (+ latent/occupancy/bounds)
        self.fit_fn = self._default_fit

        self.sections = QListWidget()
        self.sections.setMaximumHeight(110)
        self.sections.itemChanged.connect(self._excluded_changed)
        self.holdout_box = QComboBox()
        self.gene = GeneBox()
        self.gene.geneChanged.connect(self.show_gene)
        self.steps = QSpinBox(minimum=50, maximum=100000, singleStep=100, value=int(FieldConfig().steps))
        self.members = QSpinBox(minimum=2, maximum=10, value=4)
        self.members.setToolTip("networks in the uncertainty ensemble (each trained with its own seed "
                                "on its own random 90 % of the spots)")
        self.inside_only = QCheckBox("Uncertainty inside tissue only")
        self.inside_only.setChecked(True)
        self.inside_only.setToolTip("untick to see the uncertainty outside the tissue too (where the field "
                                    "has no data at all)")
        self.inside_only.toggled.connect(self._inside_toggled)
        self.n_domains = QSpinBox(minimum=2, maximum=30, value=8)
        self.labels_box = QComboBox()
        self.train_btn = QPushButton("Train without it")
        self.train_btn.clicked.connect(lambda: self.start_holdout())
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.clicked.connect(self.cancel)
        self.check_btn = QPushButton("Check every section")
        self.check_btn.setToolTip("train without each section in turn and score how well it agrees "
                                  "(one fit per section)")
        self.check_btn.clicked.connect(self.start_consistency)
        self.save_qc_btn = QPushButton("Save to AnnData…")  # issue 16: anndata_save.py
        self.save_qc_btn.setToolTip("the sections with their consistency scores and damaged flags in obs, "
                                    "the per-section table in uns['napari_inrst_qc'] (.h5ad)")
        self.save_qc_btn.clicked.connect(lambda *_: save_qc_dialog(self))
        self.unc_btn = QPushButton("Uncertainty")
        self.unc_btn.clicked.connect(self.start_uncertainty)
        self.dom_btn = QPushButton("3D domains")
        self.dom_btn.clicked.connect(self.show_domains)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.progressMsg.connect(self.status.setText)
        self.table_title = QLabel("Per-gene scores of the held-out section (click a header to sort, "
                                  "a gene to show it)")
        self.table_title.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(["gene", "Pearson", "RMSE", "SSIM"])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.cellClicked.connect(self._row_clicked)
        self.strip = SectionStrip()
        self.strip.sectionClicked.connect(self._strip_clicked)
        self.overview = QPlainTextEdit(readOnly=True)
        self.overview.setMaximumHeight(120)

        form = QFormLayout()
        form.addRow("Hold out", self.holdout_box)
        form.addRow("Gene", self.gene)
        form.addRow("Training steps", self.steps)
        form.addRow("Ensemble members", self.members)
        form.addRow("", self.inside_only)
        form.addRow("Domains (k)", self.n_domains)
        form.addRow("Annotations", self.labels_box)
        buttons = QHBoxLayout()
        buttons.addWidget(self.train_btn)
        buttons.addWidget(self.cancel_btn)
        more = QHBoxLayout()
        for b in (self.check_btn, self.unc_btn, self.dom_btn):
            more.addWidget(b)
        more.addWidget(self.save_qc_btn)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Sections (tick = missing/damaged: left out of training)"))
        lay.addWidget(self.sections)
        lay.addLayout(form)
        lay.addLayout(buttons)
        lay.addLayout(more)
        lay.addWidget(self.status)
        lay.addWidget(self.table_title)
        self.table.setMinimumHeight(160)
        lay.addWidget(self.table, 3)
        lay.addWidget(QLabel("Section overview (z)"))
        lay.addWidget(self.strip)
        lay.addWidget(self.overview)

        self._plane_timer = QTimer(self)
        self._plane_timer.setSingleShot(True)
        self._plane_timer.setInterval(100)
        self._plane_timer.timeout.connect(self.refresh_uncertainty_plane)
        self._connections = [
            (viewer.layers.events.inserted, self.refresh),
            (viewer.layers.events.removed, self.refresh),
            (viewer.dims.events.point, self._on_z),
            (viewer.dims.events.ndisplay, self._on_ndisplay),
        ]
        for ev, cb in self._connections:
            ev.connect(cb)
        self.refresh()

    # --- stack -------------------------------------------------------------------------------
    def refresh(self, *_):
        stack = find_stack(self.viewer)
        if stack is self.stack:
            return
        self.stack = stack
        # results belong to the previous stack
        self.consistency = self.model = self.pred = self.holdout = self.domains = None
        self.ensemble = self.uncertainty_field = None
        self.rows = []
        self.table.setRowCount(0)
        self.sections.blockSignals(True)
        self.sections.clear()
        self.holdout_box.clear()
        self.labels_box.clear()
        if stack is None:
            self.sections.blockSignals(False)
            self.overview.setPlainText("No sections loaded.")
            self.strip.set_data(None)
            self.gene.set_genes([])
            self._set_enabled(False)
            return
        for i, s in enumerate(stack):
            it = QListWidgetItem(f"{s.name}  (z={s.z:g} µm)")
            it.setFlags(it.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            it.setCheckState(Qt.CheckState.Checked if s.excluded else Qt.CheckState.Unchecked)
            it.setData(Qt.ItemDataRole.UserRole, i)
            self.sections.addItem(it)
            self.holdout_box.addItem(f"{s.name}  (z={s.z:g} µm)", i)
        self.sections.blockSignals(False)
        self.holdout_box.setCurrentIndex(len(stack) // 2)
        self.labels_box.addItem("(none)")
        cols = [c for c in stack[0].adata.obs.columns
                if all(c in s.adata.obs for s in stack) and stack[0].adata.obs[c].nunique() <= 50]
        self.labels_box.addItems([str(c) for c in cols])
        from ..viewer.layers import default_gene

        self.gene.set_genes(stack.genes, default_gene(stack))
        self._set_enabled(True)
        self.update_overview()

    def _set_enabled(self, on: bool):
        for w in (self.train_btn, self.check_btn, self.unc_btn):
            w.setEnabled(on and self.worker is None)
        self.dom_btn.setEnabled(on and self.worker is None and self.model is not None
                                and hasattr(self.model, "latent"))

    def _excluded_changed(self, item):
        if self.stack is None:
            return
        i = item.data(Qt.ItemDataRole.UserRole)
        self.stack[i].excluded = item.checkState() == Qt.CheckState.Checked
        self.update_overview()

    def set_excluded(self, i: int, excluded: bool = True):
        """Mark section ``i`` missing/damaged (left out of training)."""
        self.sections.item(i).setCheckState(Qt.CheckState.Checked if excluded else Qt.CheckState.Unchecked)

    def _strip_clicked(self, i: int):
        k = self.holdout_box.findData(int(i))
        if k >= 0:
            self.holdout_box.setCurrentIndex(k)

    def update_overview(self):
        from ..evaluate.checks import format_gaps, gap_overview

        if self.stack is None:
            return
        ov = gap_overview(self.stack)
        text = format_gaps(ov)
        flagged = []
        if self.consistency:
            text += "\nconsistency with a field trained without each section:"
            for r in self.consistency:
                flag = f"  ⚠ {r['reason']}" if r["flagged"] else ""
                text += f"\n  {r['name']}: score {r['score']:.3f} (z {r['z_score']:+.1f}), RMSE {r['rmse']:.3f}{flag}"
            flagged = [r["index"] for r in self.consistency if r["flagged"]]
        self.overview.setPlainText(text)
        self.strip.set_data(ov, flagged, self.holdout)

    # --- training ----------------------------------------------------------------------------
    def _default_fit(self, stack, sections, seed: int = 0, *, single: bool = False):
        """The real field at the chosen steps (``single``: one network, for ensemble members)."""
        from ..field import FieldConfig, fit_field

        cfg = FieldConfig(steps=self._steps, seed=seed)
        if single:
            cfg = cfg.replace(ensemble=1)
        return fit_field(stack, cfg, sections=list(sections), should_stop=lambda: self._cancel)

    def _fit(self, stack, sections, seed=0, *, member: bool = False):
        import inspect

        if self.fit_fn == self._default_fit:
            return self._default_fit(stack, sections, seed, single=member)
        try:
            n = len(inspect.signature(self.fit_fn).parameters)
        except (TypeError, ValueError):
            n = 2
        return self.fit_fn(stack, sections, seed) if n >= 3 else self.fit_fn(stack, sections)

    def _run(self, gen_fn, on_done, label: str):
        from napari.qt.threading import thread_worker

        if self.worker is not None or self.stack is None:
            return None
        self._cancel = False
        self._steps = int(self.steps.value())  # read here: the job runs off the UI thread
        worker = thread_worker(gen_fn, progress={"desc": label})()
        worker.yielded.connect(lambda msg: self.status.setText(str(msg)))
        worker.returned.connect(on_done)
        worker.errored.connect(lambda e: self.status.setText(f"failed: {e}"))
        worker.finished.connect(self._finished)
        self.worker = worker
        self._set_enabled(False)
        self.cancel_btn.setEnabled(True)
        self.status.setText(label + " …")
        worker.start()
        return worker

    def _finished(self):
        self.worker = None
        self.cancel_btn.setEnabled(False)
        self._set_enabled(self.stack is not None)

    def cancel(self):
        """Stop the running job (training keeps its best weights so far)."""
        self._cancel = True
        if self.worker is not None:
            self.worker.quit()
        self.status.setText("cancelling …")

    def start_holdout(self, index: int | None = None):
        """Train without the chosen section (and the excluded ones) in the background."""
        if self.stack is None:
            return None
        h = int(self.holdout_box.currentData()) if index is None else int(index)
        if index is not None:
            self.holdout_box.setCurrentIndex(self.holdout_box.findData(h))
        stack = self.stack
        kept = [i for i in stack.training_sections() if i != h]
        if not kept:
            self.status.setText("nothing left to train on: un-tick a section")
            return None

        def job():
            import time

            yield f"training without {stack[h].name} on {len(kept)} sections"
            t0 = time.perf_counter()
            model = self._fit(stack, kept)
            yield f"trained in {time.perf_counter() - t0:.1f} s; scoring"
            pred = np.asarray(model.predict(stack[h].xyz), dtype=np.float64)
            from ..evaluate.protocol import per_gene_scores

            rows = per_gene_scores(stack[h].X, pred, stack[h].xy, stack.genes)
            return model, h, pred, rows

        return self._run(job, self._holdout_done, f"QC: training without {stack[h].name}")

    def _holdout_done(self, result):
        from ..measure.metrics import pearson_per_gene, rmse

        self.model, self.holdout, self.pred, self.rows = result
        s = self.stack[self.holdout]
        self.table_title.setText(f"{s.name} (z = {s.z:g} µm) predicted by a field trained without it: mean "
                                 f"Pearson {pearson_per_gene(s.X, self.pred):.3f}, RMSE {rmse(s.X, self.pred):.3f}. "
                                 "Per gene below: click a header to sort, a gene to show it.")
        self._fill_table()
        self.show_gene(self.gene.currentText())
        self.viewer.dims.set_point(0, s.z)
        self.update_overview()
        self._set_enabled(True)

    def _fill_table(self):
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(self.rows))
        for r, row in enumerate(self.rows):
            self.table.setItem(r, 0, QTableWidgetItem(row["gene"]))
            for c, key in enumerate(COLUMNS[1:], start=1):
                self.table.setItem(r, c, _NumItem(row[key]))
        self.table.setSortingEnabled(True)
        self.table.sortItems(1, Qt.SortOrder.DescendingOrder)

    def _row_clicked(self, row, _col):
        item = self.table.item(row, 0)
        if item is not None:
            self.gene.setCurrentText(item.text())
            self.show_gene(item.text())

    def table_rows(self) -> list[dict]:
        """The table as shown (current sort order)."""
        out = []
        for r in range(self.table.rowCount()):
            out.append({"gene": self.table.item(r, 0).text(),
                        **{k: self.table.item(r, c).value for c, k in enumerate(COLUMNS[1:], start=1)}})
        return out

    # --- layers ------------------------------------------------------------------------------
    def _put_points(self, name, data, values, colormap, contrast, translate_x, size, z):
        # no border (its antialiasing band paints small cells grey) and at least MIN_POINT_PX on
        # screen, so dense single-cell sections stay readable when the three panels fit the canvas
        kw = dict(features={"value": values}, face_color="value", face_colormap=colormap,
                  face_contrast_limits=contrast, border_width=0, border_color="transparent", size=size,
                  canvas_size_limits=(MIN_POINT_PX, 10000), out_of_slice_display=False,
                  translate=(0.0, 0.0, translate_x), metadata={"inrst_qc": True, "z_um": z}, units="µm")
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data = data
            layer.size = size
            layer.features = {"value": values}
            layer.face_colormap = colormap
            layer.face_color = "value"
            layer.face_contrast_limits = contrast
            layer.translate = (0.0, 0.0, translate_x)
            layer.metadata["z_um"] = z
            layer.refresh_colors(update_color_mapping=False)
            return layer
        return self.viewer.add_points(data, name=name, **kw)

    def _put_titles(self, z, y, xs, labels, size):
        data = np.array([[z, y, x] for x in xs], dtype=np.float64)
        text = {"string": "{label}", "size": 11, "color": "white", "anchor": "lower_left",
                "translation": [0.0, -1.5 * size, 0.0]}
        if LAYER_TITLES in self.viewer.layers:
            layer = self.viewer.layers[LAYER_TITLES]
            layer.data = data
            layer.features = {"label": list(labels)}
            layer.text = text
            return layer
        return self.viewer.add_points(data, name=LAYER_TITLES, features={"label": list(labels)}, text=text,
                                      size=0.01, face_color="transparent", border_width=0,
                                      border_color="transparent", canvas_size_limits=(0, 1),
                                      out_of_slice_display=False, metadata={"inrst_qc": "titles"}, units="µm")

    def show_gene(self, gene: str):
        """Measured, predicted and residual (predicted − measured) of ``gene`` at the held-out z,
        side by side (left to right), titled in the canvas."""
        if self.stack is None or self.pred is None or gene not in self.stack.genes:
            return
        g = self.stack.gene_index(gene)
        s = self.stack[self.holdout]
        xy = s.xy
        data = np.column_stack([np.full(len(xy), s.z), xy[:, 1], xy[:, 0]])
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
        self._put_points(LAYER_MEASURED, data, meas, "viridis", (lo, hi), 0.0, size, s.z)
        self._put_points(LAYER_PREDICTED, data, pred, "viridis", (lo, hi), shift, size, s.z)
        self._put_points(LAYER_RESIDUAL, data, res, residual_colormap(), (-r, r), 2 * shift, size, s.z)
        sc = next((row for row in self.rows if row["gene"] == gene), None)
        score = f"  r = {sc['pearson']:.2f}" if sc is not None and np.isfinite(sc["pearson"]) else ""
        self._put_titles(s.z, float(xy[:, 1].min()), [x0, x0 + shift, x0 + 2 * shift],
                         [f"measured {gene}", f"predicted{score}", "residual (pred − meas)"], size)
        panels = [self.viewer.layers[n] for n in (LAYER_MEASURED, LAYER_PREDICTED, LAYER_RESIDUAL, LAYER_TITLES)]
        for lyr in panels:  # new results on top, with their own colorbars (measured/predicted share one)
            lyr.metadata["gene"] = gene
            result_on_top(self.viewer, lyr, above_points=True)
        show_own_colorbars(self.viewer, [panels[0], panels[2]])
        self._hide_own_layer(self.holdout)
        self.viewer.layers.selection.active = self.viewer.layers[LAYER_MEASURED]
        self.status.setText(f"{gene} on {s.name} (z = {s.z:g} µm): measured | predicted without it (colour "
                            f"scale {lo:.3g}–{hi:.3g}) | residual (blue under-, orange over-predicted, ±{r:.3g})"
                            + (f"; Pearson {sc['pearson']:.3f}, RMSE {sc['rmse']:.3f}" if sc is not None else ""))

    def _hide_own_layer(self, index):
        """Hide the held-out section's own Points layer (the "QC measured" panel shows the same
        cells; underneath it, it only adds clutter); show the one hidden for a previous holdout."""
        from .common import section_layers

        for lyr in section_layers(self.viewer, self.stack):
            i = lyr.metadata.get(SECTION_KEY)
            if i == index and lyr.visible:
                lyr.visible = False
                lyr.metadata["inrst_qc_hidden"] = True
            elif i != index and lyr.metadata.pop("inrst_qc_hidden", False):
                lyr.visible = True

    # --- section consistency -----------------------------------------------------------------
    def start_consistency(self):
        """Score every section against a field trained without it (background; N fits)."""
        from ..evaluate.checks import section_consistency

        stack = self.stack
        if stack is None:
            return None

        def job():  # per-section progress through a queued signal (the callback runs in the worker)
            yield f"checking {len(stack)} sections: training without each in turn (0/{len(stack)})…"
            rows = section_consistency(stack, lambda st, secs: self._fit(st, secs), progress=self._progress_msg,
                                       should_stop=lambda: self._cancel)
            yield f"checked {len(rows)} sections"
            return rows

        return self._run(job, self._consistency_done, "QC: checking every section")

    def _consistency_done(self, rows):
        self.consistency = rows
        flagged = [r["name"] for r in rows if r["flagged"]]
        self.status.setText("outlier sections: " + ", ".join(flagged) if flagged else "no outlier section")
        self.update_overview()

    # --- uncertainty -------------------------------------------------------------------------
    def _grid(self, n_xy: int = 48):
        from ..evaluate.checks import Grid

        lo, hi = self.stack.bounds()
        sz = float(np.median(np.diff(np.sort(self.stack.z)))) / 2 if len(self.stack) > 1 else 10.0
        sxy = float(max(hi[0] - lo[0], hi[1] - lo[1]) / (n_xy - 1))
        return Grid.over(lo, hi, sxy, max(sz, 1e-3))

    def start_uncertainty(self):
        """Train a small ensemble (background) and show its disagreement like a gene: a volume
        (3D display) and a plane at the current z (2D display)."""
        from ..evaluate.checks import UncertaintyField, fit_ensemble
        from ..render.grids import volume_grid
        from ..render.volume import evaluate_volume

        stack = self.stack
        if stack is None:
            return None
        k = int(self.members.value())
        masked = self.inside_only.isChecked()

        def job():
            yield f"training {k} ensemble members"
            ens = fit_ensemble(stack, lambda st, secs, seed: self._fit(st, secs, seed, member=True), k=k)
            uf = UncertaintyField(ens)
            yield "rendering the uncertainty volume"
            grid = volume_grid(uf.bounds(), UNCERTAINTY_VOLUME_VOX)
            vol = evaluate_volume(uf, grid, [0], masked=masked)[0]
            return ens, uf, grid, vol

        return self._run(job, self._uncertainty_done, "QC: uncertainty ensemble")

    def _uncertainty_done(self, result):
        self.ensemble, self.uncertainty_field, grid, vol = result
        self._show_uncertainty_volume(grid, vol)
        self.refresh_uncertainty_plane(sync=True)
        self.status.setText("uncertainty: std across the ensemble in units of each gene's spread "
                            f"(median {np.nanmedian(vol):.3f}, max {np.nanmax(vol):.3f}; plane at the current z, "
                            "volume in 3D)")

    def _show_uncertainty_volume(self, grid, vol):
        finite = np.isfinite(vol)
        lo, hi = np.percentile(vol[finite], [1, 99.5]) if finite.any() else (0.0, 1.0)
        self.uncertainty_contrast = (float(lo), float(hi if hi > lo else lo + 1e-6))
        data = np.where(finite, vol, np.float32(self.uncertainty_contrast[0])).astype(np.float32)
        if LAYER_UNCERTAINTY in self.viewer.layers:
            layer = self.viewer.layers[LAYER_UNCERTAINTY]
            layer.data = data
            layer.scale, layer.translate = grid.scale, grid.translate
            layer.contrast_limits = self.uncertainty_contrast
        else:
            layer = self.viewer.add_image(data, name=LAYER_UNCERTAINTY, colormap="inferno", blending="additive",
                                          scale=grid.scale, translate=grid.translate, units="µm",
                                          contrast_limits=self.uncertainty_contrast, rendering="mip",
                                          metadata={"inrst_qc": "uncertainty"})
            layer.colorbar.visible = True
        layer.metadata.update(grid=grid, inside=finite)
        layer.visible = self.viewer.dims.ndisplay == 3

    def _plane_grid(self, z):
        from ..render.plane import field_extent, plane_grid_for

        uf = self.uncertainty_field
        return plane_grid_for(uf, float(z), field_extent(uf, 0.05), UNCERTAINTY_PLANE_PX)

    def _current_z(self):
        return float(self.viewer.dims.point[0]) if self.viewer.dims.ndim >= 3 else 0.0

    def refresh_uncertainty_plane(self, *_, sync: bool = False):
        """Render the uncertainty plane at the current z (in a worker unless ``sync``)."""
        from ..render.plane import evaluate_plane

        if self.uncertainty_field is None or self.viewer.dims.ndisplay != 2:
            return
        uf, masked, z = self.uncertainty_field, self.inside_only.isChecked(), self._current_z()
        grid = self._plane_grid(z)
        if sync:
            self._show_uncertainty_plane(grid, evaluate_plane(uf, grid, [0], masked=masked)[0])
            return
        if self._plane_worker is not None:
            self._plane_pending = True
            return
        from napari.qt.threading import thread_worker

        @thread_worker
        def work():
            return grid, evaluate_plane(uf, grid, [0], masked=masked)[0]

        w = work()
        w.returned.connect(lambda res: self._show_uncertainty_plane(*res))
        w.finished.connect(self._plane_finished)
        self._plane_worker = w
        w.start()

    def _plane_finished(self):
        self._plane_worker = None
        if self._plane_pending:
            self._plane_pending = False
            self.refresh_uncertainty_plane()

    def _show_uncertainty_plane(self, grid, img):
        if self.uncertainty_contrast is None:
            return
        if LAYER_UNCERTAINTY_PLANE in self.viewer.layers:
            layer = self.viewer.layers[LAYER_UNCERTAINTY_PLANE]
            layer.data = img
            layer.scale, layer.translate = grid.scale, grid.translate
            layer.contrast_limits = self.uncertainty_contrast
        else:
            layer = self.viewer.add_image(img, name=LAYER_UNCERTAINTY_PLANE, colormap="inferno",
                                          scale=grid.scale, translate=grid.translate, units="µm",
                                          contrast_limits=self.uncertainty_contrast, interpolation2d="linear",
                                          blending="translucent_no_depth",
                                          metadata={"inrst_qc": "uncertainty plane"})
            result_on_top(self.viewer, layer)  # above the field plane (opaque), under the points
            show_own_colorbars(self.viewer, [layer])
        layer.metadata.update(z_um=grid.z, grid=grid)
        layer.visible = self.viewer.dims.ndisplay == 2

    def _on_z(self, *_):
        if self.uncertainty_field is not None and self.viewer.dims.ndisplay == 2:
            self._plane_timer.start()

    def _on_ndisplay(self, *_):
        three = self.viewer.dims.ndisplay == 3
        if LAYER_UNCERTAINTY in self.viewer.layers:
            self.viewer.layers[LAYER_UNCERTAINTY].visible = three
        if LAYER_UNCERTAINTY_PLANE in self.viewer.layers:
            self.viewer.layers[LAYER_UNCERTAINTY_PLANE].visible = not three
        if not three:
            self._on_z()

    def _inside_toggled(self, *_):
        """Re-render plane and volume with or without the tissue mask (no retraining)."""
        from ..render.grids import volume_grid
        from ..render.volume import evaluate_volume

        uf = self.uncertainty_field
        if uf is None or self.worker is not None:
            return None
        masked = self.inside_only.isChecked()

        def job():
            yield "rendering the uncertainty volume"
            grid = volume_grid(uf.bounds(), UNCERTAINTY_VOLUME_VOX)
            return self.ensemble, uf, grid, evaluate_volume(uf, grid, [0], masked=masked)[0]

        return self._run(job, self._uncertainty_done, "QC: uncertainty volume")

    # --- domains -----------------------------------------------------------------------------
    def show_domains(self):
        """Cluster the held-out field's latent features into 3D domains (background; a Labels
        layer), with the ARI against the chosen annotation on the held-out section."""
        from ..evaluate.checks import domain_ari, domains_3d

        if self.model is None or not hasattr(self.model, "latent"):
            self.status.setText("train a field first (Train without it)")
            return None
        model, grid, k = self.model, self._grid(), int(self.n_domains.value())
        key = self.labels_box.currentText()
        section = self.stack[self.holdout] if self.holdout is not None else None

        def job():
            yield f"clustering the field's latent features into {k} domains"
            dom = domains_3d(model, grid, k=k)
            dom.ari = None
            dom.labels_key = None
            if key and key != "(none)" and section is not None:
                dom.ari = domain_ari(model, dom, section, key)
                dom.labels_key = key
            return dom

        return self._run(job, self._domains_done, "QC: 3D domains")

    def _domains_done(self, dom):
        self.domains = dom
        kw = dom.grid.layer_kwargs()
        if LAYER_DOMAINS in self.viewer.layers:
            layer = self.viewer.layers[LAYER_DOMAINS]
            layer.data = dom.labels
            layer.scale, layer.translate = kw["scale"], kw["translate"]
        else:
            layer = self.viewer.add_labels(dom.labels, name=LAYER_DOMAINS, scale=kw["scale"], opacity=0.6,
                                           translate=kw["translate"], units=kw["units"], metadata={"inrst_qc": "domains"})
        labs = np.unique(dom.labels[dom.labels > 0])
        msg = f"{int(dom.labels.max())} domains: " + labels_legend_html(layer, labs)
        if dom.ari is not None:
            msg += f"<br>ARI vs '{dom.labels_key}' on {self.stack[self.holdout].name}: {dom.ari:.3f}"
        self.status.setText(msg)

    def cleanup(self):
        """Disconnect from the viewer and stop workers (the dock widget is being closed)."""
        for ev, cb in self._connections:
            ev.disconnect(cb)
        self._plane_timer.stop()
        self.cancel()

    def closeEvent(self, event):  # noqa: N802 - Qt name
        self.cleanup()
        super().closeEvent(event)
