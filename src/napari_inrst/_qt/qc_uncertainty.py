"""The QC widget's uncertainty panel: ensemble size, the tissue-mask toggle, and the uncertainty
shown like a gene — a volume in 3D display and a plane at the current z in 2D display, which
follows z in the background (debounced; the latest z wins)."""

from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import QCheckBox, QPushButton, QSpinBox, QWidget

from ..viewer.qc_state import render_uncertainty_plane
from . import qc_layers as L
from .common import form_layout
from .workers import LatestRequest


class UncertaintyPanel(QWidget):
    """Controls and layers of the ensemble uncertainty of :class:`~napari_inrst.viewer.qc_state.QCState`.

    ``run(label, make_job, on_done)`` is the QC widget's job runner (one job at a time);
    ``message(str)`` carries status lines."""

    message = Signal(str)

    def __init__(self, viewer, state, run, parent=None):
        super().__init__(parent)
        self.viewer, self.state, self.run = viewer, state, run
        self.members = QSpinBox(minimum=2, maximum=10, value=state.members)
        self.members.setToolTip("networks in the uncertainty ensemble (each trained with its own seed "
                                "on its own random 90 % of the spots)")
        self.inside_only = QCheckBox("Uncertainty inside tissue only")
        self.inside_only.setChecked(state.inside_only)
        self.inside_only.setToolTip("untick to see the uncertainty outside the tissue too (where the field "
                                    "has no data at all)")
        self.button = QPushButton("Uncertainty")
        form_layout([("Ensemble members", self.members), ("", self.inside_only)], self, tight=True)

        self.members.valueChanged.connect(lambda v: setattr(state, "members", int(v)))
        self.inside_only.toggled.connect(self._inside_toggled)
        self.button.clicked.connect(self.start)
        state.uncertainty_changed.connect(lambda r: L.show_uncertainty_volume(viewer, *r, state.uncertainty_contrast))
        self.planes = LatestRequest(render_uncertainty_plane, on_return=lambda res: self._show_plane(*res),
                                    what="QC uncertainty plane")
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(100)
        self._timer.timeout.connect(self.refresh_plane)
        self._connections = [(viewer.dims.events.point, self._on_z), (viewer.dims.events.ndisplay, self._on_ndisplay)]
        for ev, cb in self._connections:
            ev.connect(cb)

    def _plane_z(self):
        """The z of the plane to render with a job (None in 3D display: no plane shown)."""
        return self._current_z() if self.viewer.dims.ndisplay == 2 else None

    def start(self, *_):
        """Train a small ensemble (background) and show its disagreement like a gene; volume and
        plane are rendered in the job, the UI thread only shows them."""
        z = self._plane_z()
        return self.run("QC: uncertainty ensemble", lambda stop: self.state.uncertainty_job(stop, z), self._done)

    def _done(self, result):
        self.planes.cancel()  # a plane still rendering belongs to the previous result
        msg = self.state.set_uncertainty(result)  # shows the volume
        plane = result[4] if len(result) > 4 else None
        if plane is not None:
            self._show_plane(*plane)
        if plane is None or plane[0].z != self._plane_z():  # z moved meanwhile: render it (background)
            self.refresh_plane()
        self.message.emit(msg)

    def _current_z(self):
        return float(self.viewer.dims.point[0]) if self.viewer.dims.ndim >= 3 else 0.0

    def refresh_plane(self, *_, sync: bool = False):
        """Render the plane at the current z (in a worker, latest z wins, unless ``sync``)."""
        uf = self.state.uncertainty_field
        if uf is None or self.viewer.dims.ndisplay != 2:
            return
        args = (uf, self._current_z(), bool(self.state.inside_only))
        if sync:
            self.planes.cancel()
            self._show_plane(*render_uncertainty_plane(*args))
        else:
            self.planes.submit(*args)

    def _show_plane(self, grid, img):
        if self.state.uncertainty_contrast is not None:
            L.show_uncertainty_plane(self.viewer, grid, img, self.state.uncertainty_contrast)

    def _on_z(self, *_):
        if self.state.uncertainty_field is not None and self.viewer.dims.ndisplay == 2:
            self._timer.start()

    def _on_ndisplay(self, *_):
        L.show_for_display(self.viewer)
        if self.viewer.dims.ndisplay == 2:
            self._on_z()

    def _inside_toggled(self, on: bool):
        """Re-render plane and volume with or without the tissue mask (no retraining)."""
        self.state.inside_only = bool(on)
        if self.state.uncertainty_field is None:
            return None
        z = self._plane_z()
        return self.run("QC: uncertainty volume", lambda stop: self.state.rerender_job(z), self._done)

    def cleanup(self):
        for ev, cb in self._connections:
            ev.disconnect(cb)
        self._connections = []
        self._timer.stop()
        self.planes.cancel()
