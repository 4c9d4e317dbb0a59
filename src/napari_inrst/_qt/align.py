"""Widget "Align": align the sections (background worker), overlay them, correct one by hand.

State and matrices: :class:`~napari_inrst.viewer.align_state.AlignState` (no Qt); the manual
correction panel: :mod:`.align_manual`; the run: :class:`.workers.Job`."""

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (QCheckBox, QComboBox, QLabel, QProgressBar, QPushButton, QTableWidget, QTableWidgetItem,
                            QVBoxLayout, QWidget)

from napari.viewer import Viewer

from ..align.overlay import legend_html, overlay_points
from ..viewer.layers import SECTION_KEY
from ..render.sections import LOD_KEY, points_zyx
from ..viewer.align_state import METHOD_LABELS, METHODS, AlignState
from ..viewer.stack_source import StackSource, section_layers
from .align_deform import DeformationPanel
from .align_manual import ManualCorrection
from .common import form_layout, hbox
from .workers import Job

OVERLAY_AFTER = "Align: sections overlaid"
OVERLAY_BEFORE = "Align: before"


class AlignWidget(QWidget):
    """Choose a reference and method, run the alignment in a worker, inspect and correct it."""

    def __init__(self, viewer: Viewer):
        super().__init__()
        self.viewer = viewer
        self.state = AlignState()
        self.job = Job("alignment", on_progress=self._on_progress, on_done=self.apply_result,
                       on_error=self._on_error, on_finish=self._on_finished)

        self.reference = QComboBox()
        self.method = QComboBox()
        for m in METHODS:
            self.method.addItem(METHOD_LABELS[m], m)
        self.method.setToolTip("Non-rigid (deform): rigid, then a smooth expression-matched deformation per "
                               "section (as `napari-inrst align --method nonrigid`)")
        self.run_button = QPushButton("Align sections")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.show_before = QCheckBox("Show the positions before alignment")
        self.show_before.toggled.connect(self._toggle_before)
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["section", "angle °", "mirrored", "residual to next (µm)"])
        self.table.verticalHeader().setVisible(False)
        self.legend = QLabel("")
        self.legend.setWordWrap(True)
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.manual = ManualCorrection(self.state)
        m = self.manual  # the controls, as the widget's own attributes
        self.section, self.angle, self.dx, self.dy, self.flip = m.section, m.angle, m.dx, m.dy, m.flip
        self.reset_button, self.undo_button = m.reset_button, m.undo_button
        self.deform = DeformationPanel(viewer, self.state)

        lay = QVBoxLayout(self)
        lay.addLayout(form_layout([("Reference", self.reference), ("Method", self.method)]))
        lay.addLayout(hbox(self.run_button, self.cancel_button))
        for w in (self.progress, self.status, self.show_before, self.legend, self.table, self.manual, self.deform):
            lay.addWidget(w)
        lay.addStretch(1)

        self.state.stack_changed.connect(self._on_stack)
        self.state.moved.connect(self._on_moved)
        self.source = StackSource(viewer)
        self.source.changed.connect(self.state.set_stack)
        self.source.update()

    @property
    def stack(self):
        return self.state.stack

    @property
    def result(self):
        return self.state.result

    @property
    def worker(self):
        return self.job.worker

    # --- stack and layers ---------------------------------------------------------------------
    def refresh(self, *_):
        self.source.update()

    def _on_stack(self, stack):
        self.legend.setText("")
        self.reference.clear()
        self.manual.set_sections([] if stack is None else stack.names)
        self.table.setRowCount(0)
        if stack is None:
            self.status.setText("No sections loaded.")
            self.run_button.setEnabled(False)
            return
        self.run_button.setEnabled(not self.job.running)
        self.reference.addItems(stack.names)
        self.reference.setCurrentIndex(self.state.default_reference())
        self.status.setText(f"{len(stack)} sections; reference defaults to the middle one.")
        self._fill_table()

    def _on_moved(self, _i=-1):
        """Move the section layers (and the overlay) to the stack's current transforms."""
        if self.stack is None:
            return
        for layer in section_layers(self.viewer, self.stack):  # large sections: the cells drawn (LOD)
            s = self.stack[layer.metadata[SECTION_KEY]]
            layer.data = points_zyx(s, layer.metadata.get(LOD_KEY, {}).get("idx"))
        self._set_overlay(OVERLAY_AFTER, [s.xy for s in self.stack], opacity=0.8)
        self._fill_table()

    def _set_overlay(self, name, xys, opacity=0.8, visible=True):
        """A 2D Points layer (µm; shown at every z) with all sections, one colour per section
        (the "before" overlay in greyed tones of the same colours)."""
        from ..render.display import OVERLAY_KEY

        data, colors = overlay_points(xys, before=name == OVERLAY_BEFORE)
        size = self.stack[0].spot_diameter_um() * 0.6
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data = data
            layer.face_color = colors
            layer.visible = visible
        else:
            layer = self.viewer.add_points(data, name=name, face_color=colors, border_color="transparent",
                                           border_width=0, size=size, opacity=opacity, visible=visible,
                                           units="µm", axis_labels=("y", "x"), metadata={OVERLAY_KEY: True})
        self.legend.setText(legend_html(self.stack.names, before_shown=self.show_before.isChecked()))
        return layer

    def _toggle_before(self, on: bool):
        if OVERLAY_BEFORE in self.viewer.layers:
            self.viewer.layers[OVERLAY_BEFORE].visible = on
        if self.stack is not None and self.legend.text():
            self.legend.setText(legend_html(self.stack.names, before_shown=on))

    def _fill_table(self):
        rows = self.state.table()
        self.table.setRowCount(len(rows))
        for i, items in enumerate(rows):
            for c, text in enumerate(items):
                it = QTableWidgetItem(text)
                it.setFlags(it.flags() & ~Qt.ItemFlag.ItemIsEditable)
                self.table.setItem(i, c, it)

    # --- alignment ----------------------------------------------------------------------------
    def run(self):
        """Start the alignment in a background worker (progress per section pair)."""
        if self.stack is None or self.job.running:
            return
        stack = self.stack
        self._set_overlay(OVERLAY_BEFORE, [s.xy for s in stack], opacity=0.4, visible=self.show_before.isChecked())
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.status.setText("aligning…")
        self.job.start(self.state.job(self.reference.currentIndex(), self.method.currentData(),
                                      should_stop=self.job.should_stop))

    def cancel(self):
        if self.job.running:
            self.job.cancel()
            self.status.setText("cancelling…")

    def _on_progress(self, step):
        done, total, msg = step
        self.progress.setMaximum(total)
        self.progress.setValue(done)
        self.status.setText(msg)

    def apply_result(self, result):
        """Write ``result`` into the stack and move the layers."""
        self.state.apply_result(result)  # moves the layers, refills the table
        self.manual.show_section(self.section.currentIndex())
        self.status.setText(self.state.result_message())

    def _on_error(self, exc):  # the notification is the Job's
        self.status.setText(f"alignment failed: {exc}")

    def _on_finished(self):
        if self.result is None or self.progress.value() < self.progress.maximum():
            if not self.status.text().startswith("alignment failed"):
                self.status.setText("alignment cancelled; sections unchanged")
        self.run_button.setEnabled(self.stack is not None)
        self.cancel_button.setEnabled(False)

    # --- manual correction (the panel's, kept as the widget's API) ----------------------------
    def reset_section(self):
        self.manual.reset_section()

    def undo(self):
        """Undo the last manual correction (and select its section)."""
        self.manual.undo()
