"""The "2D plane" group of the View widget: z in µm (slider and box, continuous between and beyond
the sections), the nearest section, measured sections on/off, band-limited sampling; and z kept in
step with napari's own z slider (the sections are 3D points).

napari's z follows the plane, not each event: moving napari's dims point re-slices every section
layer and redraws the canvas, so while the user scrubs z it is moved when a plane is put on
screen (in the same event-loop turn: one redraw), to the 1 µm step of napari's slider and only
when that step changed. Without a plane to wait for (3D display, no gene) it follows after
``PUSH_DEBOUNCE_MS``. napari's slider reads µm only through this widget's box: in napari 0.9 it
shows a step index."""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QCheckBox, QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout, QPushButton

from ...render.resample import OVERSAMPLE
from ..common import Connections, set_quietly

BAND_TIP = (f"Sample the field at its own finest scale ({OVERSAMPLE:g} samples per shortest wavelength / finest grid "
            "cell) and resample it cubically to screen resolution: identical to evaluating every pixel "
            "within ~0.1% of the gene's range, far fewer network evaluations when zoomed in. Off: every "
            "pixel/voxel is evaluated. Fields that do not declare their scale are always exact.")
#: without a plane to wait for, napari's z follows this long after the last z change
PUSH_DEBOUNCE_MS = 80
#: with one, at the latest this long after (a plane for this z that never came: a cache hit on screen)
PUSH_FALLBACK_MS = 1500


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
        self._push_timer = QTimer(self)
        self._push_timer.setSingleShot(True)
        self._push_timer.setInterval(PUSH_DEBOUNCE_MS)
        self._push_timer.timeout.connect(self.push_to_dims)
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
        state.plane_updated.connect(self._on_plane)
        # napari's z axis (ndim, range, z) when this widget last looked; a new range or ndim is taken
        # in on the next event-loop turn, after the point moves napari makes for it
        self._last_dims = self._dims_now()
        self._record_timer = QTimer(self)
        self._record_timer.setSingleShot(True)
        self._record_timer.setInterval(0)
        self._record_timer.timeout.connect(lambda: setattr(self, "_last_dims", self._dims_now()))
        later = lambda *_: self._record_timer.start()  # noqa: E731
        self._connections = Connections([(viewer.dims.events.point, self._on_dims_point),
                                         (viewer.dims.events.range, later), (viewer.dims.events.ndim, later)])

    def set_z(self, z: float, *, force: bool = False) -> bool:
        """Move the plane to ``z`` µm; napari's z slider follows with the plane (see the module)."""
        if not self.state.set_z(z, force=force):
            return False
        st = self.state
        waits = st.field is not None and st.genes and self.viewer.dims.ndisplay == 2 and not self._paused()
        self._push_timer.start(PUSH_FALLBACK_MS if waits else PUSH_DEBOUNCE_MS)
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

    def _dims_now(self):
        d = self.viewer.dims
        return (d.ndim, tuple(d.range[0]), self.dims_z()) if d.ndim >= 3 else (d.ndim, None, None)

    def push_to_dims(self):
        """Move napari's z slider to ``state.z`` on its own grid (its 1 µm steps), when in its
        range and not already there."""
        self._push_timer.stop()
        z = self.state.z
        d = self.viewer.dims
        if d.ndim < 3:
            return
        lo, hi, step = d.range[0][:3]
        if not lo - 0.5 * step <= z <= hi + 0.5 * step:
            return  # beyond napari's range: its slider stays, and must not pull the plane back
        target = float(min(max(lo + round((z - lo) / (step or 1.0)) * (step or 1.0), lo), hi))
        if abs(target - self.dims_z()) > 1e-6:
            self._setting_dims = True
            try:
                d.set_point(0, target)
            finally:
                self._setting_dims = False
        self._last_dims = self._dims_now()

    def _on_plane(self, z: float):
        """A plane is on screen: napari's z follows when it is the plane of the current z (a
        plane of an earlier z must not pull napari's slider back; a movie drives it itself)."""
        d = self.viewer.dims
        step = (d.range[0][2] or 1.0) if d.ndim >= 3 else 1.0
        if not self._paused() and abs(z - self.state.z) <= 0.5 * step:
            self.push_to_dims()

    def _on_dims_point(self, *_):
        last, self._last_dims = self._last_dims, self._dims_now()
        if self._setting_dims or self._paused():
            return
        ndim, rng, z = self._last_dims
        if z is None or last[0] != ndim or last[1] != rng:
            return  # napari moved its point with a new range or axis (a layer came or went): not the user
        step = rng[2] or 1.0
        # only a move of napari's own z slider counts: other dims events (another axis, napari
        # snapping a pushed z to its step) leave napari's z within a step of where it was, and must
        # not pull back a typed z beyond the stack
        if last[2] is not None and abs(z - last[2]) <= 0.5 * step:
            return
        if abs(z - self.state.z) > 0.5 * step:  # the user moved napari's own z slider
            self.state.set_z(z)

    def cleanup(self):
        self._push_timer.stop()
        self._record_timer.stop()
        self.state.plane_updated.disconnect(self._on_plane)
        self._connections.clear()
