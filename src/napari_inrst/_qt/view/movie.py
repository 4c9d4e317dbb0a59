"""Movies of what the View widget shows, through napari-animation: a z sweep of the 2D plane (the
planes are evaluated in a worker, then shown as a temporary frame stack the movie steps through)
or a turntable rotation of the 3D volume."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable

import numpy as np
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QObject, Signal

from ...errors import InputError
from ...render.display import canvas_hw
from ...render.movie import _animation_class, movie_format, rotation_movie, sweep_movie
from ...render.screenshot import viewer_camera
from ...viewer.view_jobs import z_sweep_job
from ...viewer.view_state import FIRST_COLORMAP
from ..workers import Job

#: memory for the planes of a z-sweep movie (the grid is coarsened beyond it)
MOVIE_BYTES = 512 * 2**20
#: metadata key of the temporary frame-stack layers of a z-sweep movie
MOVIE_KEY = "inrst_movie"


class MovieMaker(QObject):
    """Makes the movies of a View (``state``, ``layers``) in ``viewer``; ``finished`` carries the
    path written (or the exception). ``restore_z()`` puts napari's z back after a sweep."""

    finished = Signal(object)

    def __init__(self, viewer, state, layers, status, restore_z: Callable[[], None], parent=None):
        super().__init__(parent)
        self.viewer, self.state, self.layers, self.status = viewer, state, layers, status
        self._restore_z = restore_z
        self.active = False  # frames are being captured: the view must not follow camera/z events
        self._evaluating = False
        self._sweep_args = None  # (path, request, zs, fps) of the z sweep being evaluated
        self.job = Job("movie", on_progress=lambda f: status.percent(int(80 * float(f))),
                       on_done=self._planes_done, on_error=self._failed, on_finish=self._job_finished)

    @property
    def busy(self) -> bool:
        return self._evaluating or self.active

    def make(self, path, *, kind: str = "z", frames: int = 48, fps: int = 12, z_range=None):
        """Write a movie (.mp4, .gif, or a folder of PNG frames for a path without suffix).

        ``kind='z'`` (2D view): the plane of the current view at ``frames`` heights from
        ``z_range`` (default: the field's z bounds), evaluated in a worker (returned), then shown
        as a temporary stack with the View's colormaps and contrast, swept and removed.
        ``kind='rotate'`` (3D view with the volume shown): one turntable turn around z.
        napari-animation captures frames from the canvas on the UI thread: the viewer pauses
        meanwhile (the progress bar counts them). InputError / RuntimeError (napari-animation
        missing) before anything starts."""
        movie_format(path)
        _animation_class()
        if self.busy:
            raise InputError(path, "a movie is already being made")
        frames, fps = int(frames), int(fps)
        if kind == "rotate":
            if self.viewer.dims.ndisplay != 3 or not any(lyr.visible for lyr in self.layers.volume.values()):
                raise InputError(path, "a rotation movie needs the 3D volume: press 'Show 3D volume' first")
            self._rotation(path, frames, fps)
            return None
        if kind != "z":
            raise InputError(path, f"movie kind must be 'z' or 'rotate', got '{kind}'")
        st = self.state
        if st.field is None or not st.genes:
            raise InputError(path, "no field or gene to show")
        if self.viewer.dims.ndisplay != 2:
            raise InputError(path, "a z sweep shows the 2D plane: switch to the 2D view first")
        cam = viewer_camera(self.viewer)
        req = st.plane_request(tuple(cam.center), cam.zoom, canvas_hw(self.viewer), force=True)
        if req is None:
            raise InputError(path, "nothing of the field is in view")
        per_frame = 4.0 * len(req.genes) * req.grid.n
        if per_frame * frames > MOVIE_BYTES:
            req = dataclasses.replace(req, grid=req.grid.coarsened(math.ceil(math.sqrt(per_frame * frames / MOVIE_BYTES))))
        lo, hi = (np.asarray(b, dtype=float) for b in st.field.bounds())
        z0, z1 = (float(v) for v in (z_range if z_range is not None else (lo[2], hi[2])))
        zs = np.linspace(z0, z1, frames)
        self.status.say(f"z sweep: evaluating {frames} planes of {req.grid.nx}×{req.grid.ny} px…")
        if self.job.running:  # the last sweep's worker is still winding down
            raise InputError(path, "a movie is already being made")
        self._evaluating, self._sweep_args = True, (path, req, zs, fps)
        return self.job.start(z_sweep_job, req, zs)

    def _planes_done(self, stack):
        path, req, zs, fps = self._sweep_args
        self._sweep(path, stack, req, zs, fps)

    def _job_finished(self):
        self._evaluating = False

    def _failed(self, exc):  # the notification is Job's
        self._evaluating = False
        self.active = False
        self.finished.emit(exc)

    def _frame_progress(self, lo: int, span: int):
        def progress(i, n):
            self.status.percent(lo + int(span * i / max(n, 1)))
            self.status.say(f"movie: frame {i}/{n}")
            self.status.repaint_now()  # frames are captured on this thread: paint without an event loop
        return progress

    def _sweep(self, path, stack, req, zs, fps):
        """Show the evaluated planes as a temporary (frame, [z,] y, x) stack, sweep it with
        napari-animation, then restore the viewer."""
        viewer, st, grid = self.viewer, self.state, req.grid
        self._evaluating = False  # the planes are here; what is left runs on this thread
        self.active = True
        cam = viewer_camera(viewer)
        cam_saved = (tuple(cam.center), cam.zoom)
        vis = {g: lyr.visible for g, lyr in self.layers.plane.items()}
        z_axis = viewer.dims.ndim >= 3  # sections (3D points) share the viewer: their z follows the sweep
        temp = []
        try:
            if viewer.dims.ndisplay != 2:
                raise InputError(path, "the view switched to 3D while the planes were evaluated")
            span = max(abs(zs[-1] - zs[0]), 1.0)
            for j, gene in enumerate(req.genes):
                if z_axis:  # (frame, z, y, x): one z "plane" covering the whole sweep
                    data = stack[j][:, None]
                    scale = (1.0, 4.0 * span, grid.dy, grid.dx)
                    translate = (0.0, float((zs[0] + zs[-1]) / 2), grid.y0, grid.x0)
                else:
                    data, scale, translate = stack[j], (1.0, grid.dy, grid.dx), (0.0, grid.y0, grid.x0)
                units = ("pixel", *["µm"] * (data.ndim - 1))
                lyr = viewer.add_image(
                    data, name=f"{gene} · z sweep", scale=scale, translate=translate, units=units,
                    colormap=st.colormaps.get(gene, FIRST_COLORMAP), contrast_limits=st.contrast[gene],
                    blending="translucent_no_depth" if j == 0 else "additive", interpolation2d="linear",
                    metadata={MOVIE_KEY: True})
                lyr.colorbar.visible = st.colorbars  # frames look like the live view
                temp.append(lyr)
            for j, lyr in enumerate(temp):  # at the bottom, in gene order, like the plane layers
                viewer.layers.move(list(viewer.layers).index(lyr), j)
            for lyr in self.layers.plane.values():
                lyr.visible = False
            cam.center, cam.zoom = cam_saved
            start, stop = {0: 0.0}, {0: float(len(zs) - 1)}
            if z_axis:
                start[1], stop[1] = float(zs[0]), float(zs[-1])
            out = sweep_movie(viewer, path, start, stop, frames=len(zs), fps=fps, progress=self._frame_progress(80, 20))
        except Exception as exc:  # noqa: BLE001 - reported through the notification and the signal
            result = exc
            show_error(f"napari-inrst: movie failed: {exc}")
        else:
            result = out
            show_info(f"saved {out}")
        finally:
            for lyr in temp:
                with contextlib.suppress(ValueError, KeyError):
                    viewer.layers.remove(lyr)
            for g, v in vis.items():
                if g in self.layers.plane:
                    self.layers.plane[g].visible = v
            cam.center, cam.zoom = cam_saved
            self.active = False
            self._restore_z()
            self.status.percent(100)
            self.status.say("")
        self.finished.emit(result)

    def _rotation(self, path, frames, fps):
        self.active = True
        try:
            out = rotation_movie(self.viewer, path, frames=frames, fps=fps, progress=self._frame_progress(0, 100))
        except Exception as exc:  # noqa: BLE001
            self.active = False
            self.finished.emit(exc)
            raise
        self.active = False
        self.status.say("")
        show_info(f"saved {out}")
        self.finished.emit(out)

    def cancel(self):
        self.job.cancel()
