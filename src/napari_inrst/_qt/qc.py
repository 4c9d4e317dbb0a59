"""Widget "QC": hold a section out, train without it, and see where the field is right and where it guesses.

* hold out a section (tick others as missing/damaged: excluded from training) and train without
  them in the background (cancellable); measured | predicted | residual of a gene side by side at
  its z (titled Points panels; the residual on a symmetric diverging scale with a dark centre) and
  a sortable per-gene table (Pearson, RMSE, SSIM) — clicking a gene shows it;
* section overview: a z strip (wide gaps shaded with their width, excluded / held-out / flagged
  sections coloured; click a tick to hold it out) and a text list with every gap and, on demand,
  each section's consistency score with outlier flags;
* the uncertainty of the field (disagreement of a small deep ensemble) rendered like a gene: a
  plane at the current z and a volume in 3D; 3D domains (k-means of the field's latent) as Labels,
  with the ARI on the held-out section against a chosen annotation.

State and computation: :class:`~napari_inrst.viewer.qc_state.QCState` (no Qt). This widget wires
its child widgets (:mod:`.qc_panels`, :mod:`.qc_uncertainty`, :mod:`.qc_strip`) and layers
(:mod:`.qc_layers`) to it, and runs its jobs one at a time with :class:`.workers.Job`; their
progress is the status line's (napari's activity-dock progress repaints the whole window while shown).
"""

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QLabel, QLayout, QPlainTextEdit, QPushButton, QSpinBox, QVBoxLayout, QWidget

from napari.viewer import Viewer

from ..viewer.qc_state import QCState
from ..viewer.stack_source import StackSource
from . import qc_layers as L
from .anndata_save import save_qc_dialog
from .common import GeneBox, form_layout, hbox
from .qc_panels import DomainsPanel, ScoreTable, SectionChecks
from .qc_strip import STRIP_EXCLUDED, STRIP_FLAGGED, STRIP_SECTION, SectionStrip  # noqa: F401 - the strip's colours
from .qc_uncertainty import UncertaintyPanel
from .workers import Job


def _state_attr(name: str, doc: str = ""):
    """A widget attribute that is the view model's (read and write)."""
    return property(lambda self: getattr(self.state, name), lambda self, v: setattr(self.state, name, v), doc=doc)


class QCWidget(QWidget):
    """Hold-out QC, section overview, uncertainty and 3D domains for the stack in the viewer."""

    progressMsg = Signal(str)  # emitted from workers, shown in the status line (queued to the UI thread)

    stack = _state_attr("stack")
    model = _state_attr("model", "field trained without the held-out section")
    pred = _state_attr("pred", "predictions at the held-out section's cells (all genes)")
    consistency = _state_attr("consistency")
    ensemble = _state_attr("ensemble")
    uncertainty_field = _state_attr("uncertainty_field")
    domains = _state_attr("domains")
    fit_fn = _state_attr("fit_fn", "seam: fit_fn(stack, sections[, seed]) -> predictor; None = the real field")

    def __init__(self, viewer: Viewer):
        super().__init__()
        from ..field import FieldConfig

        self.viewer = viewer
        self.state = QCState()
        self.job = None
        self._build_ui(int(FieldConfig().steps))
        self._wire_state()
        self.source = StackSource(viewer)
        self.source.changed.connect(self.state.set_stack)
        self.source.update()

    def _build_ui(self, steps: int):
        self.sections = SectionChecks()
        self.holdout_box = QComboBox()
        self.gene = GeneBox()
        self.steps = QSpinBox(minimum=50, maximum=100000, singleStep=100, value=steps)
        self.unc = UncertaintyPanel(self.viewer, self.state, self._run)
        self.planes = self.unc.planes
        self.members, self.inside_only, self.unc_btn = self.unc.members, self.unc.inside_only, self.unc.button
        self.dom = DomainsPanel(self.state)
        self.n_domains, self.labels_box, self.dom_btn = self.dom.n_domains, self.dom.labels_box, self.dom.button
        self.train_btn = QPushButton("Train without it")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.check_btn = QPushButton("Check every section")
        self.check_btn.setToolTip("train without each section in turn and score how well it agrees "
                                  "(one fit per section)")
        self.save_qc_btn = QPushButton("Save to AnnData…")
        self.save_qc_btn.setToolTip("the sections with their consistency scores and damaged flags in obs, "
                                    "the per-section table in uns['napari_inrst_qc'] (.h5ad)")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.table_title = QLabel("Per-gene scores of the held-out section (click a header to sort, "
                                  "a gene to show it)")
        self.table_title.setWordWrap(True)
        self.table = ScoreTable()
        self.strip = SectionStrip()
        self.overview = QPlainTextEdit(readOnly=True)
        self.overview.setMaximumHeight(120)

        form = form_layout([("Hold out", self.holdout_box), ("Gene", self.gene), ("Training steps", self.steps)])
        buttons = hbox(self.train_btn, self.cancel_btn)
        more = hbox(self.check_btn, self.unc_btn, self.dom_btn, self.save_qc_btn)
        lay = QVBoxLayout(self)
        for item in (QLabel("Sections (tick = missing/damaged: left out of training)"), self.sections, form, self.unc,
                     self.dom, buttons, more, self.status, self.table_title):
            (lay.addLayout if isinstance(item, QLayout) else lay.addWidget)(item)
        lay.addWidget(self.table, 3)
        for w in (QLabel("Section overview (z)"), self.strip, self.overview):
            lay.addWidget(w)

    def _wire_state(self):
        st = self.state
        st.steps = self.steps.value()
        self.steps.valueChanged.connect(lambda v: setattr(st, "steps", int(v)))
        self.unc.message.connect(self.status.setText)
        self.sections.excludedChanged.connect(lambda i, on: st.set_excluded(i, on) if st.stack is not None else None)
        self.gene.geneChanged.connect(self.show_gene)
        self.table.geneClicked.connect(self._gene_clicked)
        self.strip.sectionClicked.connect(self._strip_clicked)
        self.train_btn.clicked.connect(lambda: self.start_holdout())
        self.cancel_btn.clicked.connect(self.cancel)
        self.check_btn.clicked.connect(self.start_consistency)
        self.save_qc_btn.clicked.connect(lambda *_: save_qc_dialog(self))
        self.dom_btn.clicked.connect(self.show_domains)
        self.progressMsg.connect(self.status.setText)
        st.stack_changed.connect(self._on_stack)
        st.excluded_changed.connect(lambda *_: self.update_overview())
        st.holdout_changed.connect(self._on_holdout)
        st.consistency_changed.connect(lambda _: self.update_overview())

    # --- stack -------------------------------------------------------------------------------
    def refresh(self, *_):
        self.source.update()

    def _on_stack(self, stack):
        """A new stack (or none): the results belong to the previous one."""
        self.table.setRowCount(0)
        self.holdout_box.clear()
        if stack is None:
            self.sections.set_sections([], [])
            self.dom.set_annotations([])
            self.overview.setPlainText("No sections loaded.")
            self.strip.set_data(None)
            self.gene.set_genes([])
            self._set_enabled(False)
            return
        labels = self.state.section_labels()
        self.sections.set_sections(labels, [s.excluded for s in stack])
        for i, text in enumerate(labels):
            self.holdout_box.addItem(text, i)
        self.holdout_box.setCurrentIndex(self.state.default_holdout())
        self.dom.set_annotations(self.state.annotation_columns())
        self.gene.set_genes(stack.genes, self.state.default_gene())
        self._set_enabled(True)
        self.update_overview()

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.running

    @property
    def worker(self):
        """The running job's worker (None when idle)."""
        return self.job.worker if self.job is not None else None

    def _set_enabled(self, on: bool):
        idle = on and not self.running
        for w in (self.train_btn, self.check_btn, self.unc_btn):
            w.setEnabled(idle)
        self.dom_btn.setEnabled(idle and self.state.can_cluster())

    def set_excluded(self, i: int, excluded: bool = True):
        """Mark section ``i`` missing/damaged (left out of training)."""
        self.sections.set_excluded(i, excluded)

    def _strip_clicked(self, i: int):
        k = self.holdout_box.findData(int(i))
        if k >= 0:
            self.holdout_box.setCurrentIndex(k)

    def update_overview(self):
        if self.state.stack is None:
            return
        ov, text, flagged = self.state.overview()
        self.overview.setPlainText(text)
        self.strip.set_data(ov, flagged, self.state.holdout)

    # --- jobs --------------------------------------------------------------------------------
    def _run(self, label: str, make_job, on_done):
        """Start the job ``make_job(should_stop)`` builds (None when one runs or no stack)."""
        if self.running or self.state.stack is None:
            return None
        job = Job(label, on_progress=lambda msg: self.status.setText(str(msg)), on_done=on_done,
                  on_error=lambda e: self.status.setText(f"failed: {e}"), on_finish=self._finished)
        try:
            work = make_job(job.should_stop)
        except ValueError as exc:
            self.status.setText(str(exc))
            return None
        self.job = job
        self.status.setText(label + " …")
        worker = job.start(work)
        self._set_enabled(False)
        self.cancel_btn.setEnabled(True)
        return worker

    def _finished(self):
        self.cancel_btn.setEnabled(False)
        self._set_enabled(self.state.stack is not None)

    def cancel(self):
        """Stop the running job (training keeps its best weights so far)."""
        if self.job is not None:
            self.job.cancel()
        self.status.setText("cancelling …")

    def start_holdout(self, index: int | None = None):
        """Train without the chosen section (and the excluded ones) in the background."""
        if self.state.stack is None:
            return None
        h = int(self.holdout_box.currentData()) if index is None else int(index)
        if index is not None:
            self.holdout_box.setCurrentIndex(self.holdout_box.findData(h))
        return self._run(f"QC: training without {self.state.stack[h].name}",
                         lambda stop: self.state.holdout_job(h, stop), self.state.set_holdout)

    def _on_holdout(self, result):
        self.table_title.setText(self.state.holdout_title())
        self.table.fill(self.state.rows)
        self.show_gene(self.gene.currentText())
        self.viewer.dims.set_point(0, self.state.stack[self.state.holdout].z)
        self.update_overview()

    def table_rows(self) -> list[dict]:
        """The table as shown (current sort order)."""
        return self.table.rows()

    def _row_clicked(self, row, col=0):
        self.table.row_clicked(row, col)

    def _gene_clicked(self, gene: str):
        self.gene.setCurrentText(gene)
        self.show_gene(gene)

    def show_gene(self, gene: str):
        """Measured, predicted and residual (predicted − measured) of ``gene`` at the held-out z,
        side by side (left to right), titled in the canvas."""
        p = self.state.panels(gene)
        if p is None:
            return
        L.show_panels(self.viewer, self.state.stack, p)
        self.status.setText(p["status"])

    def start_consistency(self):
        """Score every section against a field trained without it (background; N fits)."""
        def progress(p):  # runs in the worker: the message reaches the UI thread through a queued signal
            self.progressMsg.emit(self.state.progress_text(p))

        return self._run("QC: checking every section", lambda stop: self.state.consistency_job(progress, stop),
                         lambda rows: self.status.setText(self.state.set_consistency(rows)))

    def start_uncertainty(self):
        """Train a small ensemble (background) and show its disagreement like a gene: a volume
        (3D display) and a plane at the current z (2D display)."""
        return self.unc.start()

    # --- domains -----------------------------------------------------------------------------
    def show_domains(self):
        """Cluster the held-out field's latent features into 3D domains (background; a Labels
        layer), with the ARI against the chosen annotation on the held-out section."""
        if not self.state.can_cluster():
            self.status.setText("train a field first (Train without it)")
            return None
        return self._run("QC: 3D domains", lambda stop: self.state.domains_job(), self._domains_done)

    def _domains_done(self, dom):
        self.state.set_domains(dom)
        ari = self.state.domains_ari_text()
        self.status.setText(L.show_domains(self.viewer, dom) + (f"<br>{ari}" if ari else ""))

    def cleanup(self):
        """Disconnect from the viewer and stop workers (the dock widget is being closed)."""
        self.source.disconnect()
        self.unc.cleanup()
        self.cancel()

    def closeEvent(self, event):  # noqa: N802 - Qt name
        self.cleanup()
        super().closeEvent(event)
