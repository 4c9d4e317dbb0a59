"""The "Export" group of the View widget: figure screenshots (×N sharper, black or white), the
volume as OME-Zarr/TIFF, the virtual section as AnnData/SpatialData, movies (:mod:`.movie`).

A child widget that gets what it exports explicitly: the viewer, the view model, its field
layers and the movie maker — no attribute of the widget it sits in."""

from __future__ import annotations

import contextlib

from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QPushButton, QSpinBox

from ...render.display import canvas_hw, set_layer_image
from ...render.plane import evaluate_plane, gene_indices
from ...render.screenshot import viewer_camera

MOVIE_KINDS = {"z sweep": "z", "rotation (3D)": "rotate"}


class ExportPanel(QGroupBox):
    """Screenshots, volume files, the virtual section and movies of a View (``state``, ``layers``
    in ``viewer``; ``movies`` a :class:`~.movie.MovieMaker`)."""

    def __init__(self, viewer, state, layers, movies, parent=None):
        super().__init__("Export", parent)
        from ..anndata_save import save_virtual_section_dialog

        self.viewer, self.state, self.layers, self.movies = viewer, state, layers, movies
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
        self.save_vs_btn.clicked.connect(lambda *_: save_virtual_section_dialog(self, state))
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
        form = QFormLayout(self)
        row = QHBoxLayout()
        row.addWidget(self.shot_scale)
        row.addWidget(self.background)
        row.addWidget(self.shot_btn, 1)
        form.addRow(row)
        form.addRow(self.save_vol_btn)
        form.addRow(self.save_vs_btn)
        row2 = QHBoxLayout()
        row2.addWidget(self.movie_kind, 1)
        row2.addWidget(self.movie_frames)
        row2.addWidget(self.movie_fps)
        row2.addWidget(self.movie_btn)
        form.addRow(row2)

    # --- screenshots --------------------------------------------------------------------------
    def screenshot(self, path=None, *, scale=None, background=None):
        """The canvas at ×``scale`` (same field of view, sharper): the 2D planes are re-evaluated
        at ×``scale`` resolution for the capture, colorbars carry the gene names."""
        from ...render.screenshot import screenshot

        scale = float(scale or self.shot_scale.value())
        layers = self.layers.shown()
        with self._sharp_planes(scale):
            return screenshot(self.viewer, path, scale=scale, layers=layers,
                              labels=[lyr.metadata["gene"] for lyr in layers],
                              background=background or self.background.currentText())

    @contextlib.contextmanager
    def _sharp_planes(self, factor: float):
        """Temporarily the plane layers at ``factor`` × the screen resolution of the current view."""
        st = self.state
        layers = [self.layers.plane[g] for g in st.genes if g in self.layers.plane]
        if factor <= 1 or self.viewer.dims.ndisplay != 2 or not layers or st.field is None:
            yield
            return
        cam = viewer_camera(self.viewer)
        grid = st.view_grid(tuple(cam.center), cam.zoom, canvas_hw(self.viewer), oversample=factor,
                            max_side=int(2048 * factor))
        if grid is None:
            yield
            return
        genes = [lyr.metadata["gene"] for lyr in layers]
        vals = evaluate_plane(st.field, grid, gene_indices(st.field, genes), cache=st.cache, oversample=st.oversample)
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

    # --- files --------------------------------------------------------------------------------
    def save_volume(self, path):
        """Write the volumes on screen (NaN outside tissue) with their voxel size in µm."""
        from ...io.ome import save_volume

        vols, grid, genes = self.layers.volume_values()
        return save_volume(path, vols, scale_zyx=grid.scale, translate_zyx=grid.translate, genes=genes)

    def _save_volume_dialog(self):
        path, _ = QFileDialog.getSaveFileName(self, "Save volume", "field.ome.zarr",
                                              "OME-Zarr (*.zarr);;TIFF (*.tif)")
        if path:
            try:
                self.save_volume(path)
                show_info(f"saved {path}")
            except Exception as exc:  # noqa: BLE001
                show_error(f"napari-inrst: saving the volume failed: {exc}")

    # --- movies -------------------------------------------------------------------------------
    def make_movie(self, path, *, kind: str = "z", frames: int | None = None, fps: int | None = None, z_range=None):
        """:meth:`.movie.MovieMaker.make` with this panel's frames and fps unless given."""
        return self.movies.make(path, kind=kind, frames=int(frames or self.movie_frames.value()),
                                fps=int(fps or self.movie_fps.value()), z_range=z_range)

    def _movie_dialog(self):
        from ...render.movie import MOVIE_MISSING, animation_available

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
