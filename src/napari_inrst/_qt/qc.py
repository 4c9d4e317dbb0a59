"""Widget "QC": hold a section out, train without it, and see where the field is right and where it guesses.

* pick a measured section to hold out (and tick sections as missing/damaged: excluded from
  training), train without them in the background (``thread_worker``, cancellable);
* side by side at that z: measured spots, the field's prediction and the residual for a gene
  (three Points layers, the prediction and residual shifted along x next to the measured one);
* a sortable per-gene table (Pearson, RMSE, SSIM) of the held-out section; clicking a gene shows it;
* section overview: z positions, gaps (wide ones marked) and, on demand, the per-section
  consistency score with outlier flags;
* uncertainty of the field (disagreement of a small ensemble) as an Image volume;
* 3D domains (k-means of the field's latent features) as a Labels volume, with the ARI on the
  held-out section when an annotation column is chosen.
"""

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari.viewer import Viewer

from .common import GeneBox, find_stack

LAYER_MEASURED = "QC measured"
LAYER_PREDICTED = "QC predicted"
LAYER_RESIDUAL = "QC residual"
LAYER_UNCERTAINTY = "QC uncertainty"
LAYER_DOMAINS = "QC domains"
COLUMNS = ("gene", "pearson", "rmse", "ssim")


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

    def __init__(self, viewer: Viewer):
        super().__init__()
        self.viewer = viewer
        self.stack = None
        self.model = None  # field trained without the held-out section
        self.holdout = None
        self.pred = None  # predictions at the held-out section's cells (all genes)
        self.rows = []  # per-gene scores
        self.consistency = None
        self.ensemble = None
        self.domains = None
        self.worker = None
        self._cancel = False
        #: seam: fit_fn(stack, sections, seed=0) -> field with .predict(xyz) (+ latent/occupancy/bounds)
        self.fit_fn = self._default_fit

        self.sections = QListWidget()
        self.sections.setMaximumHeight(140)
        self.sections.itemChanged.connect(self._excluded_changed)
        self.holdout_box = QComboBox()
        self.gene = GeneBox()
        self.gene.geneChanged.connect(self.show_gene)
        self.steps = QSpinBox(minimum=50, maximum=100000, singleStep=100, value=1500)
        self.members = QSpinBox(minimum=2, maximum=10, value=4)
        self.n_domains = QSpinBox(minimum=2, maximum=30, value=8)
        self.labels_box = QComboBox()
        self.train_btn = QPushButton("Train without it")
        self.train_btn.clicked.connect(self.start_holdout)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.clicked.connect(self.cancel)
        self.check_btn = QPushButton("Check every section")
        self.check_btn.clicked.connect(self.start_consistency)
        self.unc_btn = QPushButton("Uncertainty")
        self.unc_btn.clicked.connect(self.start_uncertainty)
        self.dom_btn = QPushButton("3D domains")
        self.dom_btn.clicked.connect(self.show_domains)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels([c if c == "gene" else c.upper() if c != "pearson" else "Pearson"
                                              for c in COLUMNS])
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.cellClicked.connect(self._row_clicked)
        self.overview = QPlainTextEdit(readOnly=True)
        self.overview.setMaximumHeight(180)

        form = QFormLayout()
        form.addRow("Hold out", self.holdout_box)
        form.addRow("Gene", self.gene)
        form.addRow("Training steps", self.steps)
        form.addRow("Ensemble members", self.members)
        form.addRow("Domains (k)", self.n_domains)
        form.addRow("Annotations", self.labels_box)
        buttons = QHBoxLayout()
        buttons.addWidget(self.train_btn)
        buttons.addWidget(self.cancel_btn)
        more = QHBoxLayout()
        for b in (self.check_btn, self.unc_btn, self.dom_btn):
            more.addWidget(b)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Sections (tick = missing/damaged: left out of training)"))
        lay.addWidget(self.sections)
        lay.addLayout(form)
        lay.addLayout(buttons)
        lay.addLayout(more)
        lay.addWidget(self.status)
        lay.addWidget(self.table)
        lay.addWidget(QLabel("Section overview"))
        lay.addWidget(self.overview)
        viewer.layers.events.inserted.connect(self.refresh)
        viewer.layers.events.removed.connect(self.refresh)
        self.refresh()

    # --- stack -------------------------------------------------------------------------------
    def refresh(self, *_):
        stack = find_stack(self.viewer)
        if stack is self.stack:
            return
        self.stack = stack
        self.sections.blockSignals(True)
        self.sections.clear()
        self.holdout_box.clear()
        self.labels_box.clear()
        if stack is None:
            self.sections.blockSignals(False)
            self.overview.setPlainText("No sections loaded.")
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
        from ..layers import default_gene

        self.gene.set_genes(stack.genes, default_gene(stack))
        self._set_enabled(True)
        self.update_overview()

    def _set_enabled(self, on: bool):
        for w in (self.train_btn, self.check_btn, self.unc_btn):
            w.setEnabled(on and self.worker is None)
        self.dom_btn.setEnabled(on and self.model is not None and hasattr(self.model, "latent"))

    def _excluded_changed(self, item):
        if self.stack is None:
            return
        i = item.data(Qt.ItemDataRole.UserRole)
        self.stack[i].excluded = item.checkState() == Qt.CheckState.Checked
        self.update_overview()

    def set_excluded(self, i: int, excluded: bool = True):
        """Mark section ``i`` missing/damaged (left out of training)."""
        self.sections.item(i).setCheckState(Qt.CheckState.Checked if excluded else Qt.CheckState.Unchecked)

    def update_overview(self):
        from ..qc import format_gaps, gap_overview

        if self.stack is None:
            return
        text = format_gaps(gap_overview(self.stack))
        if self.consistency:
            text += "\nconsistency with a field trained without each section:"
            for r in self.consistency:
                flag = f"  ⚠ {r['reason']}" if r["flagged"] else ""
                text += f"\n  {r['name']}: score {r['score']:.3f} (z {r['z_score']:+.1f}), RMSE {r['rmse']:.3f}{flag}"
        self.overview.setPlainText(text)

    # --- training ----------------------------------------------------------------------------
    def _default_fit(self, stack, sections, seed: int = 0):
        from ..field import FieldConfig, fit_field

        cfg = FieldConfig(steps=int(self.steps.value()), seed=seed)
        return fit_field(stack, cfg, sections=list(sections), should_stop=lambda: self._cancel)

    def _fit(self, stack, sections, seed=0):
        import inspect

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
            self.holdout_box.setCurrentIndex(h)
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
        from ..evaluate.metrics import pearson_per_gene, rmse

        self.model, self.holdout, self.pred, self.rows = result
        s = self.stack[self.holdout]
        self.status.setText(f"{s.name} predicted from the other sections: Pearson "
                            f"{pearson_per_gene(s.X, self.pred):.3f}, RMSE {rmse(s.X, self.pred):.3f}")
        self._fill_table()
        self.show_gene(self.gene.currentText())
        self.viewer.dims.set_point(0, s.z)
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
        kw = dict(features={"value": values}, face_color="value", face_colormap=colormap,
                  face_contrast_limits=contrast, border_width=0, size=size, out_of_slice_display=False,
                  translate=(0.0, 0.0, translate_x), metadata={"inrst_qc": True, "z_um": z}, units="µm")
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data = data
            layer.features = {"value": values}
            layer.face_colormap = colormap
            layer.face_color = "value"
            layer.face_contrast_limits = contrast
            layer.translate = (0.0, 0.0, translate_x)
            layer.refresh_colors(update_color_mapping=False)
            return layer
        return self.viewer.add_points(data, name=name, **kw)

    def show_gene(self, gene: str):
        """Measured, predicted and residual (predicted − measured) of ``gene`` at the held-out z."""
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
        width = float(xy[:, 0].max() - xy[:, 0].min())
        shift = 1.1 * width if width > 0 else 100.0
        size = s.spot_diameter_um()
        self._put_points(LAYER_MEASURED, data, meas, "viridis", (lo, hi), 0.0, size, s.z)
        self._put_points(LAYER_PREDICTED, data, pred, "viridis", (lo, hi), shift, size, s.z)
        self._put_points(LAYER_RESIDUAL, data, res, "PiYG", (-r, r), 2 * shift, size, s.z)
        for name in (LAYER_MEASURED, LAYER_PREDICTED, LAYER_RESIDUAL):
            self.viewer.layers[name].metadata["gene"] = gene

    # --- section consistency -----------------------------------------------------------------
    def start_consistency(self):
        """Score every section against a field trained without it (background; N fits)."""
        from ..qc import section_consistency

        stack = self.stack
        if stack is None:
            return None

        def job():
            msgs = []
            rows = section_consistency(stack, lambda st, secs: self._fit(st, secs), progress=msgs.append,
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
        from ..qc import Grid

        lo, hi = self.stack.bounds()
        sz = float(np.median(np.diff(np.sort(self.stack.z)))) / 2 if len(self.stack) > 1 else 10.0
        sxy = float(max(hi[0] - lo[0], hi[1] - lo[1]) / (n_xy - 1))
        return Grid.over(lo, hi, sxy, max(sz, 1e-3))

    def start_uncertainty(self):
        """Train a small ensemble (background) and show its disagreement as an Image volume."""
        from ..qc import fit_ensemble

        stack = self.stack
        if stack is None:
            return None
        k = int(self.members.value())
        grid = self._grid()

        def job():
            yield f"training {k} ensemble members"
            ens = fit_ensemble(stack, lambda st, secs, seed: self._fit(st, secs, seed), k=k)
            yield "evaluating the uncertainty volume"
            return ens, grid, ens.volume(grid)

        return self._run(job, self._uncertainty_done, "QC: uncertainty ensemble")

    def _uncertainty_done(self, result):
        self.ensemble, grid, vol = result
        kw = grid.layer_kwargs()
        if LAYER_UNCERTAINTY in self.viewer.layers:
            layer = self.viewer.layers[LAYER_UNCERTAINTY]
            layer.data = vol
            layer.scale, layer.translate = kw["scale"], kw["translate"]
        else:
            self.viewer.add_image(vol, name=LAYER_UNCERTAINTY, colormap="inferno", blending="additive",
                                  scale=kw["scale"], translate=kw["translate"],
                                  metadata={"inrst_qc": "uncertainty"})
        self.status.setText("uncertainty: std across the ensemble in units of each gene's spread "
                            f"(median {np.median(vol):.3f}, max {vol.max():.3f})")

    # --- domains -----------------------------------------------------------------------------
    def show_domains(self):
        """Cluster the held-out field's latent features into 3D domains (a Labels layer)."""
        from ..qc import domain_ari, domains_3d

        if self.model is None or not hasattr(self.model, "latent"):
            self.status.setText("train a field first (Train without it)")
            return None
        grid = self._grid()
        dom = domains_3d(self.model, grid, k=int(self.n_domains.value()))
        self.domains = dom
        kw = grid.layer_kwargs()
        if LAYER_DOMAINS in self.viewer.layers:
            layer = self.viewer.layers[LAYER_DOMAINS]
            layer.data = dom.labels
            layer.scale, layer.translate = kw["scale"], kw["translate"]
        else:
            self.viewer.add_labels(dom.labels, name=LAYER_DOMAINS, scale=kw["scale"], translate=kw["translate"],
                                   opacity=0.6, metadata={"inrst_qc": "domains"})
        key = self.labels_box.currentText()
        msg = f"{int(dom.labels.max())} domains"
        if key and key != "(none)" and self.holdout is not None:
            ari = domain_ari(self.model, dom, self.stack[self.holdout], key)
            msg += f"; ARI vs '{key}' on {self.stack[self.holdout].name}: {ari:.3f}"
            dom.ari = ari
        self.status.setText(msg)
        return dom
