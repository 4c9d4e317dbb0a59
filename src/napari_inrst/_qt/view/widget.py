"""Widget "View field": any gene of the continuous field at screen resolution — 2D planes at any z
(µm, between and beyond the sections; NaN outside tissue), 3D volumes masked by occupancy.

It only wires: the state is a Qt-free :class:`~napari_inrst.viewer.view_state.ViewState`, the
layers a :class:`~napari_inrst.viewer.field_layers.FieldLayers`; child widgets edit and follow the
state (:class:`.genes.GenePanel`, :class:`.zcontrol.ZControl`, :class:`.volume.VolumePanel`,
:class:`.export.ExportPanel`); :class:`.renderer.FieldRenderer`, :class:`.sections.SectionsOverlay`
and :class:`.movie.MovieMaker` run the work in workers (:mod:`napari_inrst._qt.workers`).
"""

import contextlib  # no `from __future__ import annotations`: napari finds the viewer argument by its annotation

from napari.utils.notifications import show_error
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from napari.viewer import Viewer

from ...errors import InputError
from ...render.screenshot import viewer_camera
from ...viewer.field_layers import FieldLayers, frame_bounds
from ...viewer.session import field_session, find_field
from ...viewer.view_state import ViewState, field_summary
from ..common import Connections, find_stack
from .export import ExportPanel
from .genes import GenePanel
from .movie import MovieMaker
from .renderer import FieldRenderer
from .sections import SectionsOverlay
from .status import StatusBar
from .volume import VolumePanel
from .zcontrol import ZControl

#: camera and z changes are rendered this long after the last one (they come in bursts)
DEBOUNCE_MS = 80


class ViewWidget(QWidget):
    """Gene picker, z in µm, 2D plane at screen resolution, 3D volume, sections overlay, export."""

    #: a movie was written (its path) or failed (the exception)
    movieFinished = Signal(object)

    def __init__(self, viewer: Viewer):
        super().__init__()
        self.viewer = viewer
        self.state = st = ViewState()
        st.set_ndisplay(viewer.dims.ndisplay)
        self.layers = FieldLayers(viewer, st)
        self._manual_field = False
        self.status_bar = StatusBar()
        self.movies = MovieMaker(viewer, st, self.layers, self.status_bar, restore_z=self._push_z, parent=self)
        self.movies.finished.connect(self.movieFinished)
        self.renderer = FieldRenderer(viewer, st, self.layers, self.status_bar, DEBOUNCE_MS, self._paused,
                                      parent=self)
        self.sections = SectionsOverlay(viewer, st, DEBOUNCE_MS, parent=self)
        self.field_label = QLabel("No field yet: train one (Train widget) or load a model file.")
        self.field_label.setWordWrap(True)
        self.load_btn = QPushButton("Load model…")
        self.load_btn.clicked.connect(self._load_dialog)
        self.genes_panel = GenePanel(st)
        self.genes_panel.autoContrastRequested.connect(self._auto_contrast)
        self.zctl = ZControl(viewer, st, self.section_z, self._paused)
        self.volume_panel = VolumePanel(st)
        self.volume_panel.showRequested.connect(self.show_volume)
        self.export = ExportPanel(viewer, st, self.layers, self.movies)
        top = QHBoxLayout()
        top.addWidget(self.field_label, 1)
        top.addWidget(self.load_btn)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        for child in (self.genes_panel, self.zctl, self.volume_panel, self.export, self.status_bar):
            lay.addWidget(child)
        lay.addStretch(1)
        for sig, cb in ((st.genes_changed, self._on_genes), (st.colormap_changed, self._on_colormap),
                        (st.z_changed, self.renderer.schedule), (st.sampling_changed, self._rerender),
                        (st.rendering_changed, self.layers.set_rendering),
                        (st.colorbars_changed, lambda _: self.layers.apply_colorbars()),
                        (st.show_sections_changed, self.sections.set_visible)):
            sig.connect(cb)
        cam = viewer_camera(viewer)
        self._connections = Connections([
            (cam.events.zoom, self.renderer.schedule),
            (cam.events.center, self.renderer.schedule),
            (viewer.dims.events.ndisplay, self._on_ndisplay),
            (viewer.layers.events.inserted, self._on_layers_changed),
            (viewer.layers.events.removed, self._on_layers_changed),
            # the explicit hand-over: Train publishes each field it ends with (also after Cancel/Resume)
            (field_session(viewer).changed, self._on_field_published),
        ])
        self._on_layers_changed()

    # --- the widget's public face (tests, scripts, other widgets) ------------------------------
    field = property(lambda self: self.state.field)
    genes = property(lambda self: self.state.genes)
    colormaps = property(lambda self: self.state.colormaps)
    contrast = property(lambda self: self.state.contrast)
    cache = property(lambda self: self.state.cache)
    plane_layers = property(lambda self: self.layers.plane)
    volume_layers = property(lambda self: self.layers.volume)
    gene = property(lambda self: self.genes_panel.gene)
    colorbar_box = property(lambda self: self.genes_panel.colorbar_box)
    z_slider = property(lambda self: self.zctl.z_slider)
    sections_box = property(lambda self: self.zctl.sections_box)
    band_box = property(lambda self: self.zctl.band_box)
    resolution = property(lambda self: self.volume_panel.resolution)
    rendering = property(lambda self: self.volume_panel.rendering)
    save_vs_btn = property(lambda self: self.export.save_vs_btn)
    movie_busy = property(lambda self: self.movies.busy)

    @property
    def z(self) -> float:
        return self.state.z

    @z.setter
    def z(self, value: float):
        self.set_z(value)

    @property
    def busy(self) -> bool:
        return self.renderer.busy or self.sections.busy

    def screenshot(self, path=None, *, scale=None, background=None):
        """See :meth:`.export.ExportPanel.screenshot`."""
        return self.export.screenshot(path, scale=scale, background=background)

    def save_volume(self, path):
        return self.export.save_volume(path)

    def make_movie(self, path, *, kind: str = "z", frames: int | None = None, fps: int | None = None, z_range=None):
        """See :meth:`.movie.MovieMaker.make`; :attr:`movieFinished` carries the result."""
        return self.export.make_movie(path, kind=kind, frames=frames, fps=fps, z_range=z_range)

    # --- field --------------------------------------------------------------------------------
    def set_field(self, field, *, genes=None):
        """Show ``field`` (any ExpressionField); ``genes`` to show first (default: one gene)."""
        self._manual_field = True
        self._use_field(field, genes)

    def _use_field(self, field, genes=None):
        self._cancel_workers()
        default = self._default_gene(field) if field is not None and not genes else None
        z = self.state.z if self.state.field is not None else self.zctl.dims_z()  # a new field keeps the z shown
        self.state.set_field(field, genes, z=z, default_gene=default)
        self.layers.clear()
        self.field_label.setText(field_summary(field))
        if field is None:
            return
        if not len(self.viewer.layers):
            self.fit_view()  # nothing else in the viewer: frame the field
        self._after_genes_changed()

    def fit_view(self, margin: float = 0.05):
        """Centre the 2D camera on the field's x/y bounds and zoom so they fill the canvas."""
        if self.field is not None:
            frame_bounds(self.viewer, self.field.bounds(), margin)

    def _default_gene(self, field):
        stack = find_stack(self.viewer)
        if stack is not None:
            from ...viewer.layers import default_gene

            with contextlib.suppress(Exception):
                return default_gene(stack)
        return None

    def _load_dialog(self):
        path, _ = QFileDialog.getOpenFileName(self, "Load napari-inrst model", "",
                                              "napari-inrst model (*.safetensors *.inrst *.*)")
        if path:
            self.load_model(path)

    def load_model(self, path):
        """Load a model file written by the Train widget / ``napari-inrst fit`` and show it."""
        try:
            from ...field import load_model

            field = load_model(path)
        except InputError as exc:
            show_error(str(exc))
            return None
        self.set_field(field)
        return field

    def _on_field_published(self, field):
        """A widget handed over a new field (:func:`napari_inrst.viewer.session.publish_field`): show it now."""
        if field is not None and field is not self.field:
            self._manual_field = False
            self._use_field(field)

    def _on_layers_changed(self, *_):
        self.layers.prune()
        if self._manual_field:
            return
        f = find_field(self.viewer)
        if f is not None and f is not self.field:
            self._use_field(f)

    # --- genes --------------------------------------------------------------------------------
    def add_gene(self, gene):
        self.state.add_gene(gene)

    def replace_gene(self, old, new):
        self.state.replace_gene(old, new)

    def remove_gene(self, gene):
        self.state.remove_gene(gene)

    def set_genes(self, genes):
        """Show exactly ``genes`` (names), in this order."""
        self.state.set_genes(genes)

    def _on_genes(self, change):
        self.layers.apply_genes(change)
        self._after_genes_changed()

    def _on_colormap(self, gene, cmap):
        self.layers.set_colormap(gene, cmap)
        if self.genes and gene == self.genes[0]:
            self.sections.refresh()  # the sections wear the first gene's colormap

    def _auto_contrast(self):
        self.state.reset_contrast()
        self.layers.apply_contrast()

    def _after_genes_changed(self):
        self.sections.refresh()  # measured spots coloured by the gene shown
        self._rerender()

    def _rerender(self, *_):
        if self.viewer.dims.ndisplay == 3:
            self.show_volume()
        else:
            self.refresh_plane()

    # --- z, plane, volume -----------------------------------------------------------------------
    def set_z(self, z: float, *, sync: bool = False):
        """Move the plane to ``z`` µm (any value, also between and beyond the sections)."""
        self.zctl.set_z(z, force=sync)
        if sync:
            self.refresh_plane(sync=True)

    def _paused(self) -> bool:
        """A movie is being captured: it drives camera and z, the view must not follow them."""
        return self.movies.active

    def _push_z(self):
        self.zctl.push_to_dims()

    def section_z(self) -> list[float]:
        """z of the measured sections (the stack in the viewer, else the field's record)."""
        stack = find_stack(self.viewer)
        if stack is not None:
            return [float(s.z) for s in stack]
        meta = getattr(self.field, "stack_meta", None) or {}
        return [float(v) for v in meta.get("z", [])]

    def snap_to_section(self):
        self.zctl.snap_to_section()

    def refresh_plane(self, *_, sync: bool = False):
        self.renderer.refresh_plane(sync=sync)

    def show_volume(self, *_):
        self.renderer.show_volume()

    def refresh_sections(self, *_, lod_only: bool = False):
        self.sections.refresh(lod_only=lod_only)

    def _on_ndisplay(self, *_):
        nd = self.viewer.dims.ndisplay
        self.state.set_ndisplay(nd)
        self.layers.set_ndisplay(nd)
        if nd == 3:
            self.show_volume()
        else:
            self.renderer.schedule()

    # --- teardown -------------------------------------------------------------------------------
    def _cancel_workers(self):
        self.sections.cancel()
        self.renderer.cancel()
        self.movies.cancel()

    def cleanup(self):
        """Stop workers and disconnect from the viewer (called when the widget closes)."""
        self.renderer.cleanup()
        self.sections.cleanup()
        self.zctl.cleanup()
        self.movies.cancel()
        self._connections.clear()

    def closeEvent(self, event):  # noqa: N802 - Qt name
        self.cleanup()
        super().closeEvent(event)
