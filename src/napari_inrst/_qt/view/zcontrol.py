"""The "2D plane" group of the View widget: z in µm (slider and box, continuous between and beyond
the sections), the nearest section, measured sections on/off, band-limited sampling; and z kept in
step with napari's own z slider (the sections are 3D points)."""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QCheckBox, QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout, QPushButton

from ...render.resample import OVERSAMPLE
from ..common import Connections, set_quietly

BAND_TIP = (f"Sample the field at its own finest scale ({OVERSAMPLE:g} samples per shortest wavelength / finest grid "
            "cell) and resample it cubically to screen resolution: identical to evaluating every pixel "
            "within ~0.1% of the gene's range, far fewer network evaluations when zoomed in. Off: every "
            "pixel/voxel is evaluated. Fields that do not declare their scale are always exact.")


class ZControl(QGroupBox):
    """Edits ``state.z`` / ``show_sections`` / ``band_limited``; follows ``state`` and napari's z.

    ``section_z()`` gives the sections' z (for "Nearest section"); while ``paused()`` (a movie
    drives napari's z) a move of napari's z slider is not taken as the user's."""

    def __init__(self, viewer, state, section_z: Callable[[], list], paused: Callable[[], bool] = lambda: False,
                 parent=None):
        super().__init__("2D plane", parent)
        from superqt import QLabeledDoubleSlider

        self.viewer, self.state = viewer, state
        self._section_z, self._paused = section_z, paused
        self._setting_dims = False
        self.z_slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        self.z_slider.setDecimals(1)
        self.z_slider.setToolTip("z in µm: moves continuously between and beyond the measured sections")
        self.z_spin = QDoubleSpinBox(decimals=1, singleStep=1.0, suffix=" µm")
        self.z_spin.setKeyboardTracking(False)
        for w in (self.z_slider, self.z_spin):
            w.valueChanged.connect(lambda v: self.set_z(v))
        self.snap_btn = QPushButton("Nearest section")
        self.snap_btn.clicked.connect(self.snap_to_section)
        self.sections_box = QCheckBox("Show measured sections")
        self.sections_box.setChecked(state.show_sections)
        self.sections_box.toggled.connect(state.set_show_sections)
        self.band_box = QCheckBox("Band-limited sampling (fast)")
        self.band_box.setChecked(state.band_limited)
        self.band_box.setToolTip(BAND_TIP)
        self.band_box.toggled.connect(state.set_band_limited)
        form = QFormLayout(self)
        form.addRow("z", self.z_slider)
        row = QHBoxLayout()
        row.addWidget(self.z_spin, 1)
        row.addWidget(self.snap_btn)
        form.addRow("", row)
        form.addRow(self.sections_box)
        form.addRow(self.band_box)
        state.field_changed.connect(self._on_field)
        state.z_changed.connect(self._show_z)
        state.sampling_changed.connect(lambda _: set_quietly(self.band_box, "setChecked", state.band_limited))
        state.show_sections_changed.connect(lambda on: set_quietly(self.sections_box, "setChecked", on))
        self._connections = Connections([(viewer.dims.events.point, self._on_dims_point)])
        self._last_dims_z = self.dims_z()  # napari's z when this widget last looked

    def set_z(self, z: float, *, force: bool = False) -> bool:
        """Move the plane to ``z`` µm, napari's z slider with it where its range allows."""
        if not self.state.set_z(z, force=force):
            return False
        self.push_to_dims()
        return True

    def snap_to_section(self):
        z = self.state.nearest_section(self._section_z())
        if z is not None:
            self.set_z(z)

    def _on_field(self, field):
        if field is None:
            return
        for w in (self.z_spin, self.z_slider):
            set_quietly(w, "setRange", *self.state.z_range)
        self._show_z(self.state.z)

    def _show_z(self, z):
        for w in (self.z_spin, self.z_slider):
            set_quietly(w, "setValue", z)

    # --- napari's own z slider --------------------------------------------------------------
    def dims_z(self):
        return float(self.viewer.dims.point[0]) if self.viewer.dims.ndim >= 3 else None

    def push_to_dims(self):
        """Move napari's z slider to ``state.z`` when in its range."""
        z = self.state.z
        if self.viewer.dims.ndim >= 3:
            lo, hi = self.viewer.dims.range[0][:2]
            if lo <= z <= hi:
                self._setting_dims = True
                try:
                    self.viewer.dims.set_point(0, z)
                finally:
                    self._setting_dims = False
                self._last_dims_z = self.dims_z()

    def _on_dims_point(self, *_):
        if self._setting_dims or self._paused():
            return
        z = self.dims_z()
        if z is None:
            return
        step = self.viewer.dims.range[0][2] if self.viewer.dims.ndim >= 3 else 1.0
        # only a move of napari's own z slider counts: other dims events (a layer added, the range
        # changed) leave napari's z where it was, and must not pull back a typed z beyond the stack
        prev, self._last_dims_z = self._last_dims_z, z
        if prev is not None and abs(z - prev) <= 0.5 * step:
            return
        if abs(z - self.state.z) > 0.5 * step:  # the user moved napari's own z slider
            self.state.set_z(z)

    def cleanup(self):
        self._connections.clear()
