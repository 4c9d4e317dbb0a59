"""The Align widget's manual correction panel: rotate, shift and mirror one section by hand (live),
reset it, undo. Edits go to :class:`~napari_inrst.viewer.align_state.AlignState`, which moves the
section; this panel only shows and reports values."""

from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QGroupBox, QPushButton

from .common import form_layout, hbox


class ManualCorrection(QGroupBox):
    """Section, angle, shift x/y, flip; Reset this section; Undo (any section)."""

    def __init__(self, state, parent=None):
        super().__init__("Manual correction (live)", parent)
        self.state = state
        self.section = QComboBox()
        self.angle = QDoubleSpinBox(minimum=-180.0, maximum=180.0, singleStep=1.0, decimals=1, suffix=" °")
        self.angle.setWrapping(True)
        self.dx = QDoubleSpinBox(minimum=-1e6, maximum=1e6, singleStep=10.0, decimals=1, suffix=" µm")
        self.dy = QDoubleSpinBox(minimum=-1e6, maximum=1e6, singleStep=10.0, decimals=1, suffix=" µm")
        self.flip = QCheckBox("flip (mirror in x)")
        self.reset_button = QPushButton("Reset this section")
        self.undo_button = QPushButton("Undo")
        self.undo_button.setToolTip("Undo the last manual correction or deformation switched on/off (any section)")
        self.undo_button.setEnabled(False)
        form_layout([("Section", self.section), ("Rotate", self.angle), ("Shift x", self.dx), ("Shift y", self.dy),
                     ("", self.flip), ("", hbox(self.reset_button, self.undo_button))], self)

        self.section.currentIndexChanged.connect(self.show_section)
        for w in (self.angle, self.dx, self.dy):
            w.valueChanged.connect(self._edited)
        self.flip.toggled.connect(self._edited)
        self.reset_button.clicked.connect(self.reset_section)
        self.undo_button.clicked.connect(self.undo)
        state.moved.connect(lambda _: self.undo_button.setEnabled(state.can_undo))

    def set_sections(self, names):
        self.section.blockSignals(True)
        self.section.clear()
        self.section.addItems(list(names))
        self.section.blockSignals(False)
        self.undo_button.setEnabled(False)

    def show_section(self, i):
        """Show section ``i``'s correction in the controls (without applying it again)."""
        if self.state.stack is None or i < 0:
            return
        angle, dx, dy, flip = self.state.edit(i)
        for w, v in ((self.angle, angle), (self.dx, dx), (self.dy, dy), (self.flip, flip)):
            w.blockSignals(True)
            if w is self.flip:
                w.setChecked(v)
            else:
                w.setValue(v)
            w.blockSignals(False)

    def _edited(self, *_):
        i = self.section.currentIndex()
        if self.state.stack is not None and i >= 0:
            self.state.set_manual(i, (self.angle.value(), self.dx.value(), self.dy.value(), self.flip.isChecked()))

    def reset_section(self):
        i = self.section.currentIndex()
        if self.state.stack is None or i < 0:
            return
        self.state.reset(i)
        self.show_section(i)

    def undo(self):
        """Undo the last manual correction (and select its section)."""
        if self.state.stack is None:
            return
        i = self.state.undo()
        if i is None:
            return
        if self.section.currentIndex() != i:
            self.section.setCurrentIndex(i)  # shows the section's restored values
        else:
            self.show_section(i)

