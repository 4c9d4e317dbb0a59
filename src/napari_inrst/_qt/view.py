"""Widget "View field": any gene of the continuous field, resampled at screen resolution.

2D: one Image layer per chosen gene at the current z (µm, continuous, between and beyond the
measured sections). On debounced camera zoom/pan and z changes the visible field of view is
re-evaluated at the canvas' pixel size in a background worker — a coarse image first, then the
fine one; stale requests are dropped (only the latest id is shown). Outside tissue is NaN
(transparent). 3D: one volume layer per gene at a chosen resolution, masked by occupancy.
The latent of the current view is cached, so switching gene is one small matrix product.

Export (screenshots, volume files, movies) is in :mod:`.view_export`.
"""

import contextlib

import numpy as np
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari.viewer import Viewer

from ..render.cache import LatentCache
from ..render.screenshot import viewer_camera, viewer_overlay
from ..render.grids import VOLUME_MAX, VOLUME_MIN, PlaneGrid, plane_for_view, volume_grid
from ..render.plane import auto_contrast, evaluate_plane, gene_indices, iter_plane, plane_cache_key
from ..render.display import canvas_hw, hide_superseded, preview_levels, set_layer_image, set_progress
from ..render.volume import iter_volume
from .common import GeneBox, find_stack, section_layers
from .view_export import FIRST_COLORMAP, ExportMixin
from .view_sections import SectionsMixin

#: metadata keys on the layers this widget owns
RENDER_KEY = "inrst_render"
FIELD_KEY = "inrst_field"
COLORMAP_CYCLE = ["magenta", "green", "cyan", "yellow", "red", "blue", "bop orange", "bop blue"]
COLORMAPS = ["magma", "viridis", "inferno", "plasma", "turbo", "gray", *COLORMAP_CYCLE]
RENDERINGS = ["mip", "attenuated_mip", "iso"]
DEBOUNCE_MS = 80
COARSE_FACTOR = 4
#: samples per finest field scale when band-limited sampling is on (see render/resample.py)
OVERSAMPLE = 4.0


def _find_field_in(viewer):
    """The trained field the Train widget left in the viewer (its helper first, then metadata)."""
    try:
        from .train import find_field
    except Exception:  # noqa: BLE001 - Train widget absent or broken: fall back to metadata
        find_field = None
    if find_field is not None:
        with contextlib.suppress(Exception):
            f = find_field(viewer)
            if f is not None:
                return f
    for layer in reversed(list(viewer.layers)):
        f = getattr(layer, "metadata", {}).get(FIELD_KEY)
        if f is not None:
            return f
    return None


class ViewWidget(SectionsMixin, ExportMixin, QWidget):
    """Gene picker, z in µm, 2D plane at screen resolution, 3D volume, sections overlay, export."""

    #: a movie was written (its path) or failed (the exception)
    movieFinished = Signal(object)

    def __init__(self, viewer: Viewer):
        super().__init__()
        self.viewer = viewer
        self.field = None
        self._manual_field = False
        self.cache = LatentCache(512 * 2**20)
        self.genes: list[str] = []
        self.colormaps: dict[str, str] = {}
        self.contrast: dict[str, tuple[float, float]] = {}
        self.z = 0.0
        self._setting_dims = False
        self._last_dims_z = None  # napari's z when this widget last looked (see _on_dims_point)
        self._plane_rid = 0
        self._plane_worker = None
        self._plane_pending = None
        self._shown_plane = None  # (grid key, tuple(genes)) of the fine image on screen
        self._vol_rid = 0
        self._vol_worker = None
        self._vol_pending = None
        self._vol_masks: dict = {}
        self._movie_worker = None
        self._movie_active = False
        self.plane_layers: dict = {}
        self.volume_layers: dict = {}
        self._stepped_back: set = set()  # (field id, ndisplay) whose first view hid the previews
        self._build_ui()
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self.refresh_plane)
        cam = viewer_camera(viewer)
        self._connections = [
            (cam.events.zoom, self._schedule),
            (cam.events.center, self._schedule),
            (viewer.dims.events.point, self._on_dims_point),
            (viewer.dims.events.ndisplay, self._on_ndisplay),
            (viewer.layers.events.inserted, self._on_layers_changed),
            (viewer.layers.events.removed, self._on_layers_changed),
        ]
        from ..viewer.session import field_session

        # the explicit hand-over: Train publishes each field it ends with (also after Cancel/Resume)
        self._connections.append((field_session(viewer).changed, self._on_field_published))
        for ev, cb in self._connections:
            ev.connect(cb)
        self._init_sections(DEBOUNCE_MS)
        self._last_dims_z = self._dims_z()
        self._on_layers_changed()

    # --- UI ---------------------------------------------------------------------------------
    def _build_ui(self):
        self.field_label = QLabel("No field yet: train one (Train widget) or load a model file.")
        self.field_label.setWordWrap(True)
        self.load_btn = QPushButton("Load model…")
        self.load_btn.clicked.connect(self._load_dialog)
        self.gene = GeneBox()
        self.add_btn = QPushButton("Add")
        self.add_btn.setToolTip("Show this gene too (one colormap each, additive blending)")
        self.add_btn.clicked.connect(lambda: self.add_gene(self.gene.currentText()))
        self.gene.geneChanged.connect(self._gene_picked)
        self.gene_list = QListWidget()
        self.gene_list.setMaximumHeight(90)
        self.gene_list.currentTextChanged.connect(self._list_selected)
        self.remove_btn = QPushButton("Remove")
        self.remove_btn.clicked.connect(self._remove_selected)
        self.colormap = QComboBox()
        self.colormap.addItems(COLORMAPS)
        self.colormap.currentTextChanged.connect(self._colormap_changed)
        self.auto_btn = QPushButton("Auto contrast")
        self.auto_btn.clicked.connect(self._auto_contrast_all)
        self.colorbar_box = QCheckBox("Colorbars on canvas")
        self.colorbar_box.setChecked(True)
        self.colorbar_box.setToolTip("One colorbar per shown gene (its colormap and contrast limits)")
        self.colorbar_box.toggled.connect(lambda _: self._apply_colorbars())
        self.z_spin = QDoubleSpinBox(decimals=1, singleStep=1.0, suffix=" µm")
        self.z_spin.setKeyboardTracking(False)
        self.z_spin.valueChanged.connect(lambda v: self.set_z(v))
        from superqt import QLabeledDoubleSlider

        self.z_slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        self.z_slider.setDecimals(1)
        self.z_slider.valueChanged.connect(lambda v: self.set_z(v))
        self.z_slider.setToolTip("z in µm: moves continuously between and beyond the measured sections")
        self.snap_btn = QPushButton("Nearest section")
        self.snap_btn.clicked.connect(self.snap_to_section)
        self.band_box = QCheckBox("Band-limited sampling (fast)")
        self.band_box.setChecked(True)
        self.band_box.setToolTip(
            "Sample the field at its own finest scale (4 samples per shortest wavelength / finest grid "
            "cell) and resample it cubically to screen resolution: identical to evaluating every pixel "
            "within ~0.1% of the gene's range, far fewer network evaluations when zoomed in. Off: every "
            "pixel/voxel is evaluated. Fields that do not declare their scale are always exact.")
        self.band_box.toggled.connect(self._band_toggled)
        self.sections_box = QCheckBox("Show measured sections")
        self.sections_box.setChecked(True)
        self.sections_box.toggled.connect(self._toggle_sections)
        self.resolution = QSpinBox(minimum=VOLUME_MIN, maximum=VOLUME_MAX, singleStep=32, value=128)
        self.resolution.setSuffix(" voxels (longest axis)")
        self.rendering = QComboBox()
        self.rendering.addItems(RENDERINGS)
        self.rendering.currentTextChanged.connect(self._rendering_changed)
        self.volume_btn = QPushButton("Show 3D volume")
        self.volume_btn.clicked.connect(self.show_volume)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setMaximumHeight(12)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        top = QHBoxLayout()
        top.addWidget(self.field_label, 1)
        top.addWidget(self.load_btn)
        genes = QGroupBox("Genes")
        gf = QFormLayout(genes)
        row = QHBoxLayout()
        row.addWidget(self.gene, 1)
        row.addWidget(self.add_btn)
        gf.addRow("Search", row)
        gf.addRow(self.gene_list)
        row2 = QHBoxLayout()
        row2.addWidget(self.colormap, 1)
        row2.addWidget(self.remove_btn)
        gf.addRow("Colormap", row2)
        row_cb = QHBoxLayout()
        row_cb.addWidget(self.auto_btn, 1)
        row_cb.addWidget(self.colorbar_box)
        gf.addRow(row_cb)
        plane = QGroupBox("2D plane")
        pf = QFormLayout(plane)
        pf.addRow("z", self.z_slider)
        row3 = QHBoxLayout()
        row3.addWidget(self.z_spin, 1)
        row3.addWidget(self.snap_btn)
        pf.addRow("", row3)
        pf.addRow(self.sections_box)
        pf.addRow(self.band_box)
        vol = QGroupBox("3D volume")
        vf = QFormLayout(vol)
        vf.addRow("Resolution", self.resolution)
        vf.addRow("Rendering", self.rendering)
        vf.addRow(self.volume_btn)
        exp = self._build_export_box()
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        for box in (genes, plane, vol, exp):
            lay.addWidget(box)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)
        lay.addStretch(1)

    # --- field ------------------------------------------------------------------------------
    def set_field(self, field, *, genes=None):
        """Show ``field`` (any ExpressionField); ``genes`` to show first (default: one gene)."""
        self._manual_field = True
        self._use_field(field, genes)

    def _use_field(self, field, genes=None):
        self._cancel_workers()
        self.field = field
        self.cache.clear()
        self.contrast.clear()
        self._vol_masks.clear()
        self._shown_plane = None
        for lyr in list(self.plane_layers.values()) + list(self.volume_layers.values()):
            with contextlib.suppress(ValueError, KeyError):
                self.viewer.layers.remove(lyr)
        self.plane_layers.clear()
        self.volume_layers.clear()
        self.genes = []
        self.gene_list.clear()
        if field is None:
            self.field_label.setText("No field.")
            self.gene.set_genes([])
            return
        names = list(field.genes)
        lo, hi = (np.asarray(b, dtype=float) for b in field.bounds())
        self.field_label.setText(f"{type(field).__name__}: {len(names)} genes, x {lo[0]:.0f}…{hi[0]:.0f}, "
                                 f"y {lo[1]:.0f}…{hi[1]:.0f}, z {lo[2]:.0f}…{hi[2]:.0f} µm")
        span = max(hi[2] - lo[2], 1.0)
        pad = max(0.25 * span, 20.0)
        for w in (self.z_spin, self.z_slider):
            w.blockSignals(True)
            w.setRange(lo[2] - pad, hi[2] + pad)
            w.blockSignals(False)
        z0 = self._dims_z()
        self.z = float(np.clip(z0 if z0 is not None else (lo[2] + hi[2]) / 2, lo[2] - pad, hi[2] + pad))
        self._sync_z_widgets()
        if not any(lyr not in self.plane_layers.values() for lyr in self.viewer.layers):
            self.fit_view()  # nothing else in the viewer: frame the field
        first = genes or [self._default_gene(names)]
        self.gene.set_genes(names, first[0])
        for g in first:
            self.add_gene(g, refresh=False)
        self._after_genes_changed()

    def fit_view(self, margin: float = 0.05):
        """Centre the 2D camera on the field's x/y bounds and zoom so they fill the canvas."""
        if self.field is None:
            return
        lo, hi = (np.asarray(b, dtype=float) for b in self.field.bounds())
        h, w = canvas_hw(self.viewer)
        cam = viewer_camera(self.viewer)
        size = np.maximum(hi[:2] - lo[:2], 1e-6)
        center = list(cam.center)
        center[-2:] = [(lo[1] + hi[1]) / 2, (lo[0] + hi[0]) / 2]
        cam.center = tuple(center)
        cam.zoom = (1 - 2 * margin) * min(h / size[1], w / size[0])

    def _default_gene(self, names):
        stack = find_stack(self.viewer)
        if stack is not None:
            from ..viewer.layers import default_gene

            with contextlib.suppress(Exception):
                g = default_gene(stack)
                if g in names:
                    return g
        return names[0]

    def _load_dialog(self):
        path, _ = QFileDialog.getOpenFileName(self, "Load napari-inrst model", "",
                                              "napari-inrst model (*.safetensors *.inrst *.*)")
        if path:
            self.load_model(path)

    def load_model(self, path):
        """Load a model file written by the Train widget / ``napari-inrst fit`` and show it."""
        from ..errors import InputError

        try:
            from ..field import load_model

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
        for d in (self.plane_layers, self.volume_layers):
            for g, lyr in list(d.items()):
                if lyr not in self.viewer.layers:
                    d.pop(g)
        if self._manual_field:
            return
        f = _find_field_in(self.viewer)
        if f is not None and f is not self.field:
            self._use_field(f)

    # --- genes ------------------------------------------------------------------------------
    def _gene_picked(self, gene):
        """Picking a gene in the box replaces the current one (Add keeps both)."""
        if self.field is None or gene not in self.field.genes:
            return
        item = self.gene_list.currentItem()
        old = item.text() if item is not None else (self.genes[0] if self.genes else None)
        if gene in self.genes:
            return
        if old is not None and old in self.genes:
            self.replace_gene(old, gene)
        else:
            self.add_gene(gene)

    def add_gene(self, gene, *, refresh: bool = True):
        if self.field is None or gene in self.genes:
            return
        gene_indices(self.field, [gene])  # InputError on unknown genes
        self.genes.append(gene)
        if gene not in self.colormaps:
            self.colormaps[gene] = FIRST_COLORMAP if len(self.genes) == 1 else \
                COLORMAP_CYCLE[(len(self.genes) - 2) % len(COLORMAP_CYCLE)]
        self.gene_list.addItem(gene)
        self.gene_list.setCurrentRow(len(self.genes) - 1)
        if refresh:
            self._after_genes_changed()

    def replace_gene(self, old, new):
        i = self.genes.index(old)
        self.genes[i] = new
        self.colormaps.setdefault(new, self.colormaps.get(old, FIRST_COLORMAP))
        # reuse the old gene's layers (no layer removal/insertion: napari keeps the view)
        for d, suffix in ((self.plane_layers, "field"), (self.volume_layers, "field 3D")):
            lyr = d.pop(old, None)
            if lyr is not None:
                lyr.metadata.update(gene=new, grid_key=None)
                lyr.name = f"{new} · {suffix}"
                lyr.colormap = self.colormaps[new]
                if new in self.contrast:  # else set when the worker's contrast arrives
                    lyr.contrast_limits = self.contrast[new]
                d[new] = lyr
        self.gene_list.item(i).setText(new)
        self._after_genes_changed()

    def remove_gene(self, gene):
        if gene not in self.genes:
            return
        i = self.genes.index(gene)
        self.genes.pop(i)
        self.gene_list.takeItem(i)
        self._drop_gene_layers(gene)
        self._after_genes_changed()

    def set_genes(self, genes):
        """Show exactly ``genes`` (names), in this order."""
        for g in list(self.genes):
            if g not in genes:
                self.remove_gene(g)
        for g in genes:
            self.add_gene(g, refresh=False)
        self._after_genes_changed()

    def _remove_selected(self):
        item = self.gene_list.currentItem()
        if item is not None:
            self.remove_gene(item.text())

    def _list_selected(self, gene):
        if gene in self.colormaps:
            self.colormap.blockSignals(True)
            self.colormap.setCurrentText(self.colormaps[gene])
            self.colormap.blockSignals(False)

    def _drop_gene_layers(self, gene):
        for d in (self.plane_layers, self.volume_layers):
            lyr = d.pop(gene, None)
            if lyr is not None:
                with contextlib.suppress(ValueError, KeyError):
                    self.viewer.layers.remove(lyr)

    def _colormap_changed(self, cmap):
        item = self.gene_list.currentItem()
        if item is None:
            return
        gene = item.text()
        self.colormaps[gene] = cmap
        for d in (self.plane_layers, self.volume_layers):
            if gene in d:
                d[gene].colormap = cmap
        if self.genes and gene == self.genes[0]:
            self.refresh_sections()

    def _after_genes_changed(self):
        self._shown_plane = None  # contrast of new genes: computed by the plane/volume worker
        self.refresh_sections()  # measured spots coloured by the gene shown
        if self.viewer.dims.ndisplay == 3:
            self.show_volume()
        else:
            self.refresh_plane()

    def _ensure_contrast(self, genes):
        missing = [g for g in genes if g not in self.contrast]
        if missing and self.field is not None:
            lims = auto_contrast(self.field, gene_indices(self.field, missing), cache=self.cache)
            self.contrast.update(dict(zip(missing, lims)))

    def _auto_contrast_all(self):
        for g in self.genes:
            self.contrast.pop(g, None)
        self._ensure_contrast(self.genes)
        for d in (self.plane_layers, self.volume_layers):
            for g, lyr in d.items():
                if g in self.contrast:
                    lyr.contrast_limits = self.contrast[g]

    # --- z ----------------------------------------------------------------------------------
    def _dims_z(self):
        if self.viewer.dims.ndim >= 3:
            return float(self.viewer.dims.point[0])
        return None

    def _sync_z_widgets(self):
        for w in (self.z_spin, self.z_slider):
            w.blockSignals(True)
            w.setValue(self.z)
            w.blockSignals(False)

    def set_z(self, z: float, *, sync: bool = False):
        """Move the plane to ``z`` µm (any value, also between and beyond the sections)."""
        z = float(z)
        if abs(z - self.z) < 1e-9 and not sync:
            return
        self.z = z
        self._sync_z_widgets()
        self._push_z_to_dims()
        if sync:
            self.refresh_plane(sync=True)
        else:
            self._schedule()

    def _push_z_to_dims(self):
        """Move napari's own z slider (sections are 3D points) to this widget's z when in range."""
        z = self.z
        if self.viewer.dims.ndim >= 3:
            lo, hi = self.viewer.dims.range[0][:2]
            if lo <= z <= hi:
                self._setting_dims = True
                try:
                    self.viewer.dims.set_point(0, z)
                finally:
                    self._setting_dims = False
                self._last_dims_z = self._dims_z()

    def section_z(self) -> list[float]:
        stack = find_stack(self.viewer)
        if stack is not None:
            return [float(s.z) for s in stack]
        meta = getattr(self.field, "stack_meta", None) or {}
        return [float(v) for v in meta.get("z", [])]

    def snap_to_section(self):
        zs = self.section_z()
        if zs:
            self.set_z(min(zs, key=lambda v: abs(v - self.z)))

    def _on_dims_point(self, *_):
        if self._setting_dims or self._movie_active:
            return
        z = self._dims_z()
        if z is None:
            return
        step = self.viewer.dims.range[0][2] if self.viewer.dims.ndim >= 3 else 1.0
        # only a move of napari's own z slider counts: other dims events (a layer added, the range
        # changed) leave napari's z where it was, and must not pull back a typed z beyond the stack
        prev, self._last_dims_z = self._last_dims_z, z
        if prev is not None and abs(z - prev) <= 0.5 * step:
            return
        if abs(z - self.z) > 0.5 * step:  # the user moved napari's own z slider
            self.z = z
            self._sync_z_widgets()
            self._schedule()

    def _toggle_sections(self, on):
        for lyr in section_layers(self.viewer):
            lyr.visible = bool(on)
        self.refresh_sections()

    # --- 2D plane ---------------------------------------------------------------------------
    @property
    def oversample(self):
        return OVERSAMPLE if self.band_box.isChecked() else None

    def _band_toggled(self, *_):
        self._shown_plane = None
        if self.viewer.dims.ndisplay == 3:
            self.show_volume()
        else:
            self.refresh_plane()

    def _schedule(self, *_):
        if self.field is not None and self.genes and self.viewer.dims.ndisplay == 2 and not self._movie_active:
            self._timer.start()

    def current_grid(self) -> PlaneGrid | None:
        """The grid that fills the canvas at screen resolution at the current z."""
        if self.field is None:
            return None
        cam = viewer_camera(self.viewer)
        center = tuple(cam.center)[-2:]
        return plane_for_view(self.z, center, cam.zoom, canvas_hw(self.viewer), self.field.bounds())

    @property
    def busy(self) -> bool:
        return (self._plane_worker is not None or self._vol_worker is not None or self._timer.isActive()
                or self._plane_pending is not None or self._vol_pending is not None or self.sections_busy)

    def refresh_plane(self, *_, sync: bool = False):
        """Evaluate the plane for the current view (cache hit or ``sync``: now; else in a worker)."""
        if self.field is None or not self.genes or self.viewer.dims.ndisplay != 2:
            return
        grid = self.current_grid()
        if grid is None:
            return
        genes = tuple(self.genes)
        if self._shown_plane == (grid.key(), genes):
            return
        idx = gene_indices(self.field, genes)
        self._plane_rid += 1
        ov = self.oversample
        key, _ = plane_cache_key(self.field, grid, oversample=ov)
        if sync or self.cache.get(self.field, key) is not None:
            self._plane_pending = None
            vals = evaluate_plane(self.field, grid, idx, cache=self.cache, oversample=ov)
            self._show_plane(grid, genes, vals, fine=True)
            return
        self._plane_pending = (self._plane_rid, self.field, grid, genes, idx, ov)
        if self._plane_worker is not None:
            self._plane_worker.quit()  # its finished signal starts the pending request
        else:
            self._start_plane()

    def _start_plane(self):
        req, self._plane_pending = self._plane_pending, None
        if req is None:
            return
        rid, field, grid, genes, idx, ov = req
        cache = self.cache
        levels = preview_levels(field, grid, ov, COARSE_FACTOR)
        missing = [(g, i) for g, i in zip(genes, idx) if g not in self.contrast]

        @thread_worker
        def work():
            if missing:  # the first look at a gene samples the whole field: here, not on the UI thread
                lims = auto_contrast(field, [i for _, i in missing], cache=cache)
                yield ("contrast", field, {g: lim for (g, _), lim in zip(missing, lims)})
            for lvl in levels:
                vals = yield from iter_plane(field, lvl, idx, cache=cache, oversample=ov)
                yield ("plane", rid, lvl, genes, vals, lvl is grid)

        w = work()
        w.yielded.connect(self._on_plane_yield)
        w.finished.connect(self._on_plane_done)
        w.errored.connect(lambda exc: show_error(f"napari-inrst: plane rendering failed: {exc}"))
        self._plane_worker = w
        w.start()

    def _on_plane_yield(self, item):
        if not isinstance(item, tuple):
            set_progress(self.progress, item)
            return
        if item[0] == "contrast":
            if item[1] is self.field:
                for g, lim in item[2].items():
                    self.contrast.setdefault(g, lim)
            return
        _, rid, grid, genes, vals, fine = item
        if rid != self._plane_rid:  # stale: a newer request exists
            return
        self._show_plane(grid, genes, vals, fine=fine)

    def _on_plane_done(self):
        self._plane_worker = None
        if self._plane_pending is not None:
            self._start_plane()

    def _show_plane(self, grid: PlaneGrid, genes, vals, *, fine: bool):
        if self.viewer.dims.ndisplay != 2:
            return
        for j, gene in enumerate(genes):
            data = vals[j]
            lyr = self.plane_layers.get(gene)
            if lyr is None or lyr not in self.viewer.layers:
                self._ensure_contrast([gene])
                lyr = self.viewer.add_image(
                    data, name=f"{gene} · field", scale=grid.scale, translate=grid.translate,
                    colormap=self.colormaps.get(gene, FIRST_COLORMAP), contrast_limits=self.contrast[gene],
                    blending="additive", interpolation2d="linear", units="µm",
                    metadata={RENDER_KEY: "plane", "gene": gene},
                )
                self.plane_layers[gene] = lyr
                self._to_bottom(lyr)
            else:
                set_layer_image(lyr, data, grid.scale, grid.translate)
                lim = self.contrast.get(gene)
                if lim is not None and tuple(lyr.contrast_limits) != tuple(lim):
                    lyr.contrast_limits = lim
            if not lyr.visible:
                lyr.visible = True
            lyr.metadata.update(z_um=grid.z, grid=grid, fine=fine)
        self._fix_blending(self.plane_layers)
        if fine and (id(self.field), 2) not in self._stepped_back:  # once per field and view:
            self._stepped_back.add((id(self.field), 2))  # finished previews/overlays step back
            hide_superseded(self.viewer, keep=self.plane_layers.values())
        self._apply_colorbars()
        self.status.setText(f"z = {grid.z:.1f} µm · {grid.nx}×{grid.ny} px at {grid.dx:.2f} µm/px"
                            + ("" if fine else " (coarse)"))
        if fine:
            self._shown_plane = (grid.key(), tuple(genes))  # refresh_plane compares before evaluating
            self.progress.setValue(100)

    def _apply_colorbars(self):
        """Colorbar overlays of the field layers on or off (the checkbox); the scale bar (µm) with them."""
        on = self.colorbar_box.isChecked()
        for lyr in [*self.plane_layers.values(), *self.volume_layers.values()]:
            cb = getattr(lyr, "colorbar", None)
            if cb is not None:
                cb.visible = on
        if on and self.field_layers():
            viewer_overlay(self.viewer, "scale_bar").visible = True

    def _to_bottom(self, lyr):
        i = list(self.viewer.layers).index(lyr)
        if i != 0:
            self.viewer.layers.move(i, 0)

    def _fix_blending(self, layers: dict):
        """Bottom field layer translucent (NaN stays transparent), the others add on top."""
        order = sorted(layers.values(), key=lambda lyr: list(self.viewer.layers).index(lyr))
        for k, lyr in enumerate(order):
            want = "translucent_no_depth" if k == 0 else "additive"
            if str(lyr.blending) != want:  # the setter always redraws
                lyr.blending = want

    # --- 3D volume --------------------------------------------------------------------------
    def volume_grid(self):
        idx = gene_indices(self.field, self.genes)
        return volume_grid(self.field.bounds(), int(self.resolution.value()), budget_bytes=1 << 30,
                           bytes_per_voxel=4.0 * (len(idx) + 1))

    def show_volume(self, *_):
        """Switch to 3D and render the chosen genes as volumes (missing or outdated ones only)."""
        if self.field is None or not self.genes:
            return
        if self.viewer.dims.ndisplay != 3:
            self.viewer.dims.ndisplay = 3  # _on_ndisplay comes back here
            return
        grid = self.volume_grid()
        ov = self.oversample
        gkey = (grid.key(), ov)
        todo = [g for g in self.genes
                if g not in self.volume_layers or self.volume_layers[g].metadata.get("grid_key") != gkey]
        for g in self.genes:
            if g in self.volume_layers and g not in todo:
                self.volume_layers[g].visible = True
        if not todo:
            return
        self._vol_rid += 1
        self._vol_pending = (self._vol_rid, self.field, grid, tuple(todo), gene_indices(self.field, todo), ov)
        if self._vol_worker is not None:
            self._vol_worker.quit()
        else:
            self._start_volume()

    def _start_volume(self):
        req, self._vol_pending = self._vol_pending, None
        if req is None:
            return
        rid, field, grid, genes, idx, ov = req
        cache = self.cache
        self.status.setText(f"rendering {', '.join(genes)} at {grid.nx}×{grid.ny}×{grid.nz} voxels…")

        missing = [(g, i) for g, i in zip(genes, idx) if g not in self.contrast]

        @thread_worker
        def work():
            if missing:
                lims = auto_contrast(field, [i for _, i in missing], cache=cache)
                yield ("contrast", field, {g: lim for (g, _), lim in zip(missing, lims)})
            vals = yield from iter_volume(field, grid, idx, cache=cache, oversample=ov)
            yield ("volume", rid, grid, genes, vals, ov)

        w = work()
        w.yielded.connect(self._on_volume_yield)
        w.finished.connect(self._on_volume_done)
        w.errored.connect(lambda exc: show_error(f"napari-inrst: volume rendering failed: {exc}"))
        self._vol_worker = w
        w.start()

    def _on_volume_yield(self, item):
        if not isinstance(item, tuple):
            set_progress(self.progress, item)
            return
        if item[0] == "contrast":
            self._on_plane_yield(item)
            return
        _, rid, grid, genes, vals, ov = item
        if rid != self._vol_rid:
            return
        self._show_volume(grid, genes, vals, ov)

    def _on_volume_done(self):
        self._vol_worker = None
        if self._vol_pending is not None:
            self._start_volume()

    def _show_volume(self, grid, genes, vals, ov=None):
        mask = np.isfinite(vals[0])
        self._vol_masks = {grid.key(): mask}
        for j, gene in enumerate(genes):
            self._ensure_contrast([gene])
            lo = self.contrast[gene][0]
            v = vals[j]
            fill = min(lo, float(np.nanmin(v))) if mask.any() else lo
            data = np.where(mask, v, np.float32(fill)).astype(np.float32)  # no NaN in ray casting
            lyr = self.volume_layers.get(gene)
            if lyr is None or lyr not in self.viewer.layers:
                lyr = self.viewer.add_image(
                    data, name=f"{gene} · field 3D", scale=grid.scale, translate=grid.translate,
                    colormap=self.colormaps.get(gene, FIRST_COLORMAP), contrast_limits=self.contrast[gene],
                    blending="additive", rendering=self.rendering.currentText(), units="µm",
                    metadata={RENDER_KEY: "volume", "gene": gene},
                )
                self.volume_layers[gene] = lyr
                self._to_bottom(lyr)
            else:
                lyr.scale = grid.scale
                lyr.translate = grid.translate
                lyr.data = data
            lyr.metadata.update(grid_key=(grid.key(), ov), grid=grid)
            lyr.visible = self.viewer.dims.ndisplay == 3
        if (id(self.field), 3) not in self._stepped_back:
            self._stepped_back.add((id(self.field), 3))
            hide_superseded(self.viewer, keep=self.volume_layers.values())
        self._apply_colorbars()
        self.progress.setValue(100)
        self.status.setText(f"volume {grid.nx}×{grid.ny}×{grid.nz} voxels of {grid.dx:.1f}×{grid.dy:.1f}×"
                            f"{grid.dz:.1f} µm")

    def _rendering_changed(self, mode):
        for lyr in self.volume_layers.values():
            lyr.rendering = mode

    def _on_ndisplay(self, *_):
        three = self.viewer.dims.ndisplay == 3
        for lyr in self.plane_layers.values():
            lyr.visible = not three
        for lyr in self.volume_layers.values():
            lyr.visible = three
        if three:
            self.show_volume()
        else:
            self._shown_plane = None
            self._schedule()

    # --- teardown ---------------------------------------------------------------------------
    def _cancel_workers(self):
        self._cancel_sections()
        self._plane_pending = self._vol_pending = None
        for w in (self._plane_worker, self._vol_worker, self._movie_worker):
            if w is not None:
                with contextlib.suppress(RuntimeError):
                    w.quit()

    def cleanup(self):
        """Stop workers and disconnect from the viewer (called when the widget closes)."""
        self._timer.stop()
        self._sec_timer.stop()
        self._cancel_workers()
        for ev, cb in self._connections:
            with contextlib.suppress(Exception):
                ev.disconnect(cb)
        self._connections = []

    def closeEvent(self, event):  # noqa: N802 - Qt name
        self.cleanup()
        super().closeEvent(event)
