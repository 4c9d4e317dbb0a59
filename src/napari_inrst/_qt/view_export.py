"""Export part of the "View field" widget: figure screenshots, the volume as OME-Zarr/TIFF, and
movies through napari-animation — a z sweep of the plane (the planes are evaluated in a worker,
then shown as a temporary frame stack the movie steps through) or a turntable rotation of the
3D volume.

:class:`ExportMixin` is mixed into :class:`~napari_inrst._qt.view.ViewWidget`; it uses the
widget's state (field, genes, layers, colormaps, contrast, progress bar) and its export controls.
"""

import contextlib
import dataclasses
import math

import numpy as np
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QFileDialog

from ..render.screenshot import viewer_camera
from ..render.plane import gene_indices, iter_plane

#: the colormap of the first gene (the View widget's default)
FIRST_COLORMAP = "magma"
MOVIE_KINDS = {"z sweep": "z", "rotation (3D)": "rotate"}
#: memory for the planes of a z-sweep movie (the grid is coarsened beyond it)
MOVIE_BYTES = 512 * 2**20
#: metadata key of the temporary frame-stack layers of a z-sweep movie
MOVIE_KEY = "inrst_movie"


class ExportMixin:
    """Screenshots, volume files and movies of what the View widget shows."""

    def _build_export_box(self):
        """The "Export" group: screenshot scale and background, volume files, movies."""
        from qtpy.QtWidgets import QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QPushButton, QSpinBox

        from .anndata_save import save_virtual_section_dialog

        self.shot_scale = QSpinBox(minimum=1, maximum=8, value=4, prefix="×")
        self.background = QComboBox()
        self.background.addItems(["black", "white"])
        self.shot_btn = QPushButton("Screenshot…")
        self.shot_btn.clicked.connect(self._screenshot_dialog)
        self.save_vol_btn = QPushButton("Save volume…")
        self.save_vol_btn.clicked.connect(self._save_volume_dialog)
        self.save_vs_btn = QPushButton("Save virtual section…")  # issue 16: anndata_save.py
        self.save_vs_btn.setToolTip("pseudo-spots inside the tissue at the current z with the field's expression, "
                                    "as AnnData (.h5ad) or SpatialData (.zarr), for scanpy/squidpy")
        self.save_vs_btn.clicked.connect(lambda *_: save_virtual_section_dialog(self))
        self.movie_kind = QComboBox()
        self.movie_kind.addItems(list(MOVIE_KINDS))
        self.movie_kind.setToolTip("z sweep: the 2D plane from the bottom to the top of the field (current "
                                   "view); rotation: one turn of the 3D volume around z")
        self.movie_frames = QSpinBox(minimum=2, maximum=600, value=48, suffix=" frames")
        self.movie_fps = QSpinBox(minimum=1, maximum=60, value=12, suffix=" fps")
        self.movie_btn = QPushButton("Movie…")
        self.movie_btn.setToolTip("Through napari-animation: .mp4, .gif, or a name without suffix for a folder "
                                  "of PNG frames. Frames are captured from the canvas on the main thread "
                                  "(the viewer pauses meanwhile; the progress bar counts them).")
        self.movie_btn.clicked.connect(self._movie_dialog)

        exp = QGroupBox("Export")
        ef = QFormLayout(exp)
        row4 = QHBoxLayout()
        row4.addWidget(self.shot_scale)
        row4.addWidget(self.background)
        row4.addWidget(self.shot_btn, 1)
        ef.addRow(row4)
        ef.addRow(self.save_vol_btn)
        ef.addRow(self.save_vs_btn)
        row5 = QHBoxLayout()
        row5.addWidget(self.movie_kind, 1)
        row5.addWidget(self.movie_frames)
        row5.addWidget(self.movie_fps)
        row5.addWidget(self.movie_btn)
        ef.addRow(row5)
        return exp

    def field_layers(self):
        d = self.volume_layers if self.viewer.dims.ndisplay == 3 else self.plane_layers
        return [d[g] for g in self.genes if g in d]

    def screenshot(self, path=None, *, scale=None, background=None):
        """The canvas at ×``scale`` (same field of view, sharper): the 2D planes are re-evaluated
        at ×``scale`` resolution for the capture, colorbars carry the gene names."""
        from ..render.screenshot import screenshot

        scale = float(scale or self.shot_scale.value())
        layers = self.field_layers()
        with self._sharp_planes(scale):
            return screenshot(self.viewer, path, scale=scale, layers=layers, labels=[lyr.metadata["gene"] for lyr in layers],
                              background=background or self.background.currentText())

    @contextlib.contextmanager
    def _sharp_planes(self, factor: float):
        """Temporarily the plane layers at ``factor`` × the screen resolution of the current view."""
        from ..render.display import canvas_hw, set_layer_image
        from ..render.grids import plane_for_view
        from ..render.plane import evaluate_plane

        layers = [self.plane_layers[g] for g in self.genes if g in self.plane_layers]
        if factor <= 1 or self.viewer.dims.ndisplay != 2 or not layers or self.field is None:
            yield
            return
        cam = viewer_camera(self.viewer)
        grid = plane_for_view(self.z, tuple(cam.center)[-2:], cam.zoom, canvas_hw(self.viewer), self.field.bounds(),
                              oversample=factor, max_side=int(2048 * factor))
        if grid is None:
            yield
            return
        genes = [lyr.metadata["gene"] for lyr in layers]
        vals = evaluate_plane(self.field, grid, gene_indices(self.field, genes), cache=self.cache,
                              oversample=self.oversample)
        saved = [(lyr, lyr.data, tuple(lyr.scale), tuple(lyr.translate)) for lyr in layers]
        try:
            for lyr, v in zip(layers, vals):
                set_layer_image(lyr, v, grid.scale, grid.translate)
            yield
        finally:
            for lyr, data, sc, tr in saved:
                set_layer_image(lyr, data, sc, tr)

    def _screenshot_dialog(self):
        path, _ = QFileDialog.getSaveFileName(self, "Save screenshot", "field.png", "PNG (*.png);;TIFF (*.tif)")
        if path:
            try:
                self.screenshot(path)
                show_info(f"saved {path}")
            except Exception as exc:  # noqa: BLE001 - report, never crash the UI
                show_error(f"napari-inrst: screenshot failed: {exc}")

    def save_volume(self, path):
        """Write the volumes on screen (NaN outside tissue) with their voxel size in µm."""
        from ..io.ome import save_volume

        layers = [self.volume_layers[g] for g in self.genes if g in self.volume_layers]
        if not layers:
            raise RuntimeError("no volume yet: press 'Show 3D volume' first")
        grid = layers[0].metadata["grid"]
        layers = [lyr for lyr in layers if lyr.metadata.get("grid") == grid]
        mask = self._vol_masks.get(grid.key())
        vols = np.stack([np.asarray(lyr.data, dtype=np.float32) for lyr in layers])
        if mask is not None:
            vols[:, ~mask] = np.nan
        return save_volume(path, vols, scale_zyx=grid.scale, translate_zyx=grid.translate,
                           genes=[lyr.metadata["gene"] for lyr in layers])

    def _save_volume_dialog(self):
        path, _ = QFileDialog.getSaveFileName(self, "Save volume", "field.ome.zarr",
                                              "OME-Zarr (*.zarr);;TIFF (*.tif)")
        if path:
            try:
                self.save_volume(path)
                show_info(f"saved {path}")
            except Exception as exc:  # noqa: BLE001
                show_error(f"napari-inrst: saving the volume failed: {exc}")

    def _movie_dialog(self):
        from ..render.movie import MOVIE_MISSING, animation_available

        if not animation_available():
            show_info(MOVIE_MISSING)
            return
        kind = MOVIE_KINDS[self.movie_kind.currentText()]
        default = "z_sweep.mp4" if kind == "z" else "rotation.mp4"
        path, _ = QFileDialog.getSaveFileName(self, "Save movie", default,
                                              "MP4 (*.mp4);;GIF (*.gif);;Folder of PNG frames (no suffix) (*)")
        if not path:
            return
        try:
            self.make_movie(path, kind=kind)
        except Exception as exc:  # noqa: BLE001 - report, never crash the UI
            show_error(f"napari-inrst: movie failed: {exc}")

    @property
    def movie_busy(self) -> bool:
        return self._movie_worker is not None or self._movie_active

    def make_movie(self, path, *, kind: str = "z", frames: int | None = None, fps: int | None = None,
                   z_range=None):
        """Write a movie through napari-animation (.mp4, .gif, or a folder of PNG frames for a path
        without suffix); :attr:`movieFinished` carries the path (or the exception) when done.

        ``kind='z'`` (2D view): the plane of the current view at ``frames`` heights from
        ``z_range`` (default: the field's z bounds). The planes are evaluated in a worker (progress
        bar; the viewer stays responsive), then shown as a temporary stack that the movie steps
        through, with this widget's colormaps and contrast, and removed afterwards.
        ``kind='rotate'`` (3D view with the volume shown): one turntable turn around z.
        napari-animation captures the frames from the canvas on the main thread, so the viewer
        pauses while they are written (the progress bar counts them). Raises InputError / a
        RuntimeError (napari-animation missing) before anything starts."""
        from ..errors import InputError
        from ..render.movie import _animation_class, movie_format

        movie_format(path)
        _animation_class()
        if self.movie_busy:
            raise InputError(path, "a movie is already being made")
        frames = int(frames or self.movie_frames.value())
        fps = int(fps or self.movie_fps.value())
        if kind == "rotate":
            if self.viewer.dims.ndisplay != 3 or not any(lyr.visible for lyr in self.volume_layers.values()):
                raise InputError(path, "a rotation movie needs the 3D volume: press 'Show 3D volume' first")
            self._run_rotation_movie(path, frames, fps)
            return None
        if kind != "z":
            raise InputError(path, f"movie kind must be 'z' or 'rotate', got '{kind}'")
        if self.field is None or not self.genes:
            raise InputError(path, "no field or gene to show")
        if self.viewer.dims.ndisplay != 2:
            raise InputError(path, "a z sweep shows the 2D plane: switch to the 2D view first")
        grid = self.current_grid()
        if grid is None:
            raise InputError(path, "nothing of the field is in view")
        lo, hi = (np.asarray(b, dtype=float) for b in self.field.bounds())
        z0, z1 = (float(v) for v in (z_range if z_range is not None else (lo[2], hi[2])))
        genes = tuple(self.genes)
        per_frame = 4.0 * len(genes) * grid.n
        if per_frame * frames > MOVIE_BYTES:
            grid = grid.coarsened(math.ceil(math.sqrt(per_frame * frames / MOVIE_BYTES)))
        zs = np.linspace(z0, z1, frames)
        field, idx, ov = self.field, gene_indices(self.field, genes), self.oversample

        @thread_worker
        def work():
            stack = np.empty((len(genes), frames, grid.ny, grid.nx), dtype=np.float32)
            for i, z in enumerate(zs):
                gen = iter_plane(field, dataclasses.replace(grid, z=float(z)), idx, oversample=ov)
                while True:
                    try:
                        f = next(gen)
                    except StopIteration as stop:
                        stack[:, i] = stop.value
                        break
                    yield (i + float(f)) / frames
            return stack

        self.status.setText(f"z sweep: evaluating {frames} planes of {grid.nx}×{grid.ny} px…")
        w = work()
        w.yielded.connect(lambda f: self.progress.setValue(int(80 * float(f))))
        w.returned.connect(lambda stack: self._finish_z_movie(path, stack, grid, genes, zs, fps))
        w.errored.connect(self._movie_failed)
        w.finished.connect(self._movie_worker_done)
        self._movie_worker = w
        w.start()
        return w

    def _movie_worker_done(self):
        self._movie_worker = None

    def _movie_failed(self, exc):
        self._movie_worker = None
        self._movie_active = False
        show_error(f"napari-inrst: movie failed: {exc}")
        self.movieFinished.emit(exc)

    def _frame_progress(self, lo: int, span: int):
        def progress(i, n):
            self.progress.setValue(lo + int(span * i / max(n, 1)))
            self.status.setText(f"movie: frame {i}/{n}")
            self.progress.repaint()  # frames are captured on this thread: paint without an event loop
            self.status.repaint()
        return progress

    def _finish_z_movie(self, path, stack, grid, genes, zs, fps):
        """Show the evaluated planes as a temporary (frame, [z,] y, x) stack, sweep it with
        napari-animation, then restore the viewer."""
        from ..render.movie import sweep_movie

        viewer = self.viewer
        self._movie_worker = None  # its planes are here; what is left runs on this thread
        self._movie_active = True
        cam = viewer_camera(viewer)
        cam_saved = (tuple(cam.center), cam.zoom)
        vis = {g: lyr.visible for g, lyr in self.plane_layers.items()}
        z_axis = viewer.dims.ndim >= 3  # sections (3D points) share the viewer: their z follows the sweep
        temp = []
        try:
            if viewer.dims.ndisplay != 2:
                from ..errors import InputError

                raise InputError(path, "the view switched to 3D while the planes were evaluated")
            span = max(abs(zs[-1] - zs[0]), 1.0)
            for j, gene in enumerate(genes):
                if z_axis:  # (frame, z, y, x): one z "plane" covering the whole sweep
                    data = stack[j][:, None]
                    scale = (1.0, 4.0 * span, grid.dy, grid.dx)
                    translate = (0.0, float((zs[0] + zs[-1]) / 2), grid.y0, grid.x0)
                else:
                    data, scale, translate = stack[j], (1.0, grid.dy, grid.dx), (0.0, grid.y0, grid.x0)
                units = ("pixel", *["µm"] * (data.ndim - 1))
                lyr = viewer.add_image(
                    data, name=f"{gene} · z sweep", scale=scale, translate=translate, units=units,
                    colormap=self.colormaps.get(gene, FIRST_COLORMAP), contrast_limits=self.contrast[gene],
                    blending="translucent_no_depth" if j == 0 else "additive", interpolation2d="linear",
                    metadata={MOVIE_KEY: True})
                lyr.colorbar.visible = self.colorbar_box.isChecked()  # frames look like the live view
                temp.append(lyr)
            for j, lyr in enumerate(temp):  # at the bottom, in gene order, like the plane layers
                viewer.layers.move(list(viewer.layers).index(lyr), j)
            for lyr in self.plane_layers.values():
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
                if g in self.plane_layers:
                    self.plane_layers[g].visible = v
            cam.center, cam.zoom = cam_saved
            self._movie_active = False
            self._push_z_to_dims()
            self.progress.setValue(100)
            self.status.setText("")
        self.movieFinished.emit(result)

    def _run_rotation_movie(self, path, frames, fps):
        from ..render.movie import rotation_movie

        self._movie_active = True
        try:
            out = rotation_movie(self.viewer, path, frames=frames, fps=fps, progress=self._frame_progress(0, 100))
        except Exception as exc:  # noqa: BLE001
            self._movie_active = False
            self.movieFinished.emit(exc)
            raise
        self._movie_active = False
        self.status.setText("")
        show_info(f"saved {out}")
        self.movieFinished.emit(out)
