"""Widget "Align": align the sections (background worker), overlay them, correct one by hand."""


import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
                            QProgressBar, QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from napari.viewer import Viewer

from ..align.overlay import ManualEdits, correction, legend_html, overlay_points, table_rows
from ..viewer.layers import SECTION_KEY
from ..render.sections import LOD_KEY, points_zyx
from .common import find_stack, section_layers

OVERLAY_AFTER = "Align: sections overlaid"
OVERLAY_BEFORE = "Align: before"
#: consecutive manual changes of one section within this many seconds undo as one step
UNDO_MERGE_S = 1.0


class AlignWidget(QWidget):
    """Choose a reference and method, run the alignment in a worker, inspect and correct it."""

    def __init__(self, viewer: Viewer):
        super().__init__()
        self.viewer = viewer
        self.stack = None
        self.worker = None
        self.result = None
        self._base = None  # transforms before manual corrections (one 3×3 per section)
        self._manual = ManualEdits(UNDO_MERGE_S)  # section index → (angle, dx, dy, flip), with undo

        self.reference = QComboBox()
        self.method = QComboBox()
        self.method.addItems(["rigid", "similarity", "none"])
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

        form = QFormLayout()
        form.addRow("Reference", self.reference)
        form.addRow("Method", self.method)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)

        # manual correction of one section
        self.section = QComboBox()
        self.section.currentIndexChanged.connect(self._select_section)
        self.angle = QDoubleSpinBox(minimum=-180.0, maximum=180.0, singleStep=1.0, decimals=1, suffix=" °")
        self.angle.setWrapping(True)
        self.dx = QDoubleSpinBox(minimum=-1e6, maximum=1e6, singleStep=10.0, decimals=1, suffix=" µm")
        self.dy = QDoubleSpinBox(minimum=-1e6, maximum=1e6, singleStep=10.0, decimals=1, suffix=" µm")
        self.flip = QCheckBox("flip (mirror in x)")
        for w in (self.angle, self.dx, self.dy):
            w.valueChanged.connect(self._manual_changed)
        self.flip.toggled.connect(self._manual_changed)
        self.reset_button = QPushButton("Reset this section")
        self.reset_button.clicked.connect(self.reset_section)
        self.undo_button = QPushButton("Undo")
        self.undo_button.setToolTip("Undo the last manual correction (any section)")
        self.undo_button.clicked.connect(self.undo)
        self.undo_button.setEnabled(False)
        self.legend = QLabel("")
        self.legend.setWordWrap(True)
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        manual = QGroupBox("Manual correction (live)")
        mform = QFormLayout(manual)
        mform.addRow("Section", self.section)
        mform.addRow("Rotate", self.angle)
        mform.addRow("Shift x", self.dx)
        mform.addRow("Shift y", self.dy)
        mform.addRow("", self.flip)
        row = QHBoxLayout()
        row.addWidget(self.reset_button)
        row.addWidget(self.undo_button)
        mform.addRow("", row)

        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addLayout(buttons)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)
        lay.addWidget(self.show_before)
        lay.addWidget(self.legend)
        lay.addWidget(self.table)
        lay.addWidget(manual)
        lay.addStretch(1)
        viewer.layers.events.inserted.connect(self.refresh)
        viewer.layers.events.removed.connect(self.refresh)
        self.refresh()

    # --- stack and layers ---------------------------------------------------------------------
    def refresh(self, *_):
        stack = find_stack(self.viewer)
        if stack is self.stack:
            return
        self.stack = stack
        self.result = None
        self._manual.clear()
        self.undo_button.setEnabled(False)
        self.legend.setText("")
        self.reference.clear()
        self.section.blockSignals(True)
        self.section.clear()
        self.section.blockSignals(False)
        self.table.setRowCount(0)
        if stack is None:
            self.status.setText("No sections loaded.")
            self.run_button.setEnabled(False)
            return
        self.run_button.setEnabled(True)
        self.reference.addItems(stack.names)
        self.reference.setCurrentIndex(len(stack) // 2)
        self.section.addItems(stack.names)
        self._base = stack.transforms()
        self.status.setText(f"{len(stack)} sections; reference defaults to the middle one.")
        self._fill_table()

    def _update_layers(self):
        """Move the section layers (and the overlay) to the stack's current transforms."""
        if self.stack is None:
            return
        for layer in section_layers(self.viewer, self.stack):  # large sections: the cells drawn (LOD)
            s = self.stack[layer.metadata[SECTION_KEY]]
            layer.data = points_zyx(s, layer.metadata.get(LOD_KEY, {}).get("idx"))
        self._set_overlay(OVERLAY_AFTER, [s.xy for s in self.stack], opacity=0.8)

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
        rows = table_rows(self.stack, self.result)
        self.table.setRowCount(len(rows))
        for i, items in enumerate(rows):
            for c, text in enumerate(items):
                it = QTableWidgetItem(text)
                it.setFlags(it.flags() & ~Qt.ItemFlag.ItemIsEditable)
                self.table.setItem(i, c, it)

    # --- alignment ----------------------------------------------------------------------------
    def run(self):
        """Start the alignment in a background worker (progress per section pair)."""
        from napari.qt.threading import thread_worker

        from ..align import iter_align_stack

        if self.stack is None or self.worker is not None:
            return
        stack, ref, method = self.stack, self.reference.currentIndex(), self.method.currentText()
        self._set_overlay(OVERLAY_BEFORE, [s.xy for s in stack], opacity=0.4,
                          visible=self.show_before.isChecked())

        @thread_worker
        def work():
            return (yield from iter_align_stack(stack, reference=ref, method=method))

        self.worker = work()
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(self._on_done)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.status.setText("aligning…")
        self.worker.start()

    def cancel(self):
        if self.worker is not None:
            self.worker.quit()
            self.status.setText("cancelling…")

    def _on_progress(self, step):
        done, total, msg = step
        self.progress.setMaximum(total)
        self.progress.setValue(done)
        self.status.setText(msg)

    def _on_done(self, result):
        self.apply_result(result)

    def apply_result(self, result):
        """Write ``result`` into the stack and move the layers."""
        self.result = result
        result.apply(self.stack)
        self._base = self.stack.transforms()
        self._manual.clear()
        self.undo_button.setEnabled(False)
        self._select_section(self.section.currentIndex())
        self._update_layers()
        self._fill_table()
        mirrored = [n for n, m in zip(self.stack.names, result.mirrored) if m]
        med = float(np.median(result.residual_um)) if result.residual_um else float("nan")
        self.status.setText(f"aligned onto {self.stack.names[result.reference]} ({result.method}); median "
                            f"residual {med:.1f} µm" + (f"; mirrored: {', '.join(mirrored)}" if mirrored else ""))

    def _on_error(self, exc):
        from napari.utils.notifications import show_error

        self.status.setText(f"alignment failed: {exc}")
        show_error(str(exc))

    def _on_finished(self):
        if self.result is None or self.progress.value() < self.progress.maximum():
            if not self.status.text().startswith("alignment failed"):
                self.status.setText("alignment cancelled; sections unchanged")
        self.worker = None
        self.run_button.setEnabled(self.stack is not None)
        self.cancel_button.setEnabled(False)

    # --- manual correction --------------------------------------------------------------------
    def _select_section(self, i):
        if self.stack is None or i < 0:
            return
        angle, dx, dy, flip = self._manual.get(i)
        for w, v in ((self.angle, angle), (self.dx, dx), (self.dy, dy)):
            w.blockSignals(True)
            w.setValue(v)
            w.blockSignals(False)
        self.flip.blockSignals(True)
        self.flip.setChecked(flip)
        self.flip.blockSignals(False)

    def _manual_changed(self, *_):
        i = self.section.currentIndex()
        if self.stack is None or i < 0:
            return
        self._manual.set(i, (self.angle.value(), self.dx.value(), self.dy.value(), self.flip.isChecked()))
        self._apply_manual(i)

    def _apply_manual(self, i):
        from ..stack import apply_transform

        base = self._base[i]
        s = self.stack[i]
        center = apply_transform(base, s.xy_input).mean(axis=0)
        s.transform = correction(*self._manual.get(i), center=center) @ base
        self.undo_button.setEnabled(self._manual.can_undo)
        self._update_layers()
        self._fill_table()

    def reset_section(self):
        i = self.section.currentIndex()
        if self.stack is None or i < 0:
            return
        self._manual.set(i, (0.0, 0.0, 0.0, False), merge=False)  # one undo step of its own
        self._select_section(i)
        self._apply_manual(i)

    def undo(self):
        """Undo the last manual correction (and select its section)."""
        if self.stack is None:
            return
        i = self._manual.undo()
        if i is None:
            return
        if self.section.currentIndex() != i:
            self.section.setCurrentIndex(i)  # shows the section's restored values
        else:
            self._select_section(i)
        self._apply_manual(i)
