"""The View widget's rendering: plane requests for the 2D view (debounced camera and z changes,
latest request wins, a coarse image first) and volume requests for 3D, evaluated by the
Qt-free jobs of :mod:`napari_inrst.viewer.view_jobs` in workers and shown through
:class:`~napari_inrst.viewer.field_layers.FieldLayers`."""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import QObject, QTimer

from ...render.display import canvas_hw
from ...render.plane import evaluate_plane, plane_cache_key
from ...render.screenshot import viewer_camera
from ...viewer.view_jobs import plane_job, volume_job
from ..workers import LatestRequest


class FieldRenderer(QObject):
    """Turns the requests of ``state`` (a :class:`~napari_inrst.viewer.view_state.ViewState`)
    into ``layers``; progress and a summary go to ``status``; nothing is scheduled while
    ``paused()`` (a movie is being captured)."""

    def __init__(self, viewer, state, layers, status, debounce_ms: int,
                 paused: Callable[[], bool] = lambda: False, parent=None):
        super().__init__(parent)
        self.viewer, self.state, self.layers, self.status = viewer, state, layers, status
        self._paused = paused
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(debounce_ms)
        self._timer.timeout.connect(self.refresh_plane)
        self.planes = LatestRequest(plane_job, on_yield=self._on_result, what="plane rendering")
        self.volumes = LatestRequest(volume_job, on_yield=self._on_result, what="volume rendering")

    @property
    def busy(self) -> bool:
        return self.planes.busy or self.volumes.busy or self._timer.isActive()

    def schedule(self, *_):
        """Refresh the plane after the debounce interval (camera and z changes come in bursts)."""
        st = self.state
        if st.field is not None and st.genes and self.viewer.dims.ndisplay == 2 and not self._paused():
            self._timer.start()

    # --- 2D -----------------------------------------------------------------------------------
    def refresh_plane(self, *_, sync: bool = False):
        """Evaluate the plane for the current view (cache hit or ``sync``: now; else in a worker)."""
        self._timer.stop()
        if self.viewer.dims.ndisplay != 2:
            return
        cam = viewer_camera(self.viewer)
        req = self.state.plane_request(tuple(cam.center), cam.zoom, canvas_hw(self.viewer), frame=self.layers.frame())
        if req is None:
            return
        key, _ = plane_cache_key(req.field, req.grid, oversample=req.oversample)
        if sync or self.state.cache.get(req.field, key) is not None:
            self.planes.cancel()
            vals = evaluate_plane(req.field, req.grid, list(req.idx), cache=self.state.cache,
                                  oversample=req.oversample)
            self._show_plane(req.grid, req.genes, vals, True)
            return
        self.planes.submit(req, self.state.cache)

    def _on_result(self, item):
        """What a plane or volume job yields: a progress fraction, contrast limits, or a result."""
        if not isinstance(item, tuple):
            self.status.fraction(item)
        elif item[0] == "contrast":
            self.state.add_contrast(item[1], item[2])
        elif item[0] == "plane":
            self._show_plane(*item[1:])
        else:
            self._show_volume(*item[1:])

    def _show_plane(self, grid, genes, vals, fine):
        if not self.layers.show_plane(grid, genes, vals, fine=fine):
            return
        self.state.plane_on_screen(grid)  # napari's z follows in the same turn (one redraw)
        self.status.say(f"z = {grid.z:.1f} µm · {grid.nx}×{grid.ny} px at {grid.dx:.2f} µm/px"
                        + ("" if fine else " (coarse)"))
        if fine:
            self.state.plane_shown(grid, genes)  # the same request is not made again
            self.status.percent(100)

    # --- 3D -----------------------------------------------------------------------------------
    def show_volume(self, *_):
        """Switch to 3D and render the genes shown as volumes (missing or outdated ones only)."""
        st = self.state
        if st.field is None or not st.genes:
            return
        if self.viewer.dims.ndisplay != 3:
            self.viewer.dims.ndisplay = 3  # the widget's ndisplay handler comes back here
            return
        grid = st.volume_grid()
        todo = self.layers.volume_todo(st.volume_key(grid))
        if not todo:
            return
        req = st.volume_request(todo, grid)
        self.status.say(f"rendering {', '.join(req.genes)} at {grid.nx}×{grid.ny}×{grid.nz} voxels…")
        self.volumes.submit(req, st.cache)

    def _show_volume(self, grid, genes, vals, key):
        self.layers.show_volume(grid, genes, vals, key)
        self.status.percent(100)
        self.status.say(f"volume {grid.nx}×{grid.ny}×{grid.nz} voxels of {grid.dx:.1f}×{grid.dy:.1f}×"
                        f"{grid.dz:.1f} µm")

    def cancel(self):
        self.planes.cancel()
        self.volumes.cancel()

    def cleanup(self):
        self._timer.stop()
        self.cancel()
