"""Widget "Sections": what is loaded, what was assumed, and how the measured spots are coloured.

The stack's geometry is set here: z (even spacing or one value per section, µm), the unit factor
(coordinates as read × factor = µm) and the normalization. The summary says what was assumed
rather than read from the files (e.g. "z assumed: 10 µm apart — set it in the Sections widget").
Changes apply to the stack in place (every widget keeps working on the same stack) and move the
section layers; a field trained before no longer matches the sections and must be retrained.
The changes themselves: :class:`~napari_inrst.viewer.sections_state.SectionsState` (no Qt).
Recolouring, moving the layers and renormalizing run in workers (10⁶ cells: seconds to tens of
seconds); the UI thread only swaps the results in, one layer per event-loop turn.
"""

from collections import deque

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari.viewer import Viewer

from ..render.sections import LOD_KEY, apply_section_update
from ..viewer.layers import SECTION_KEY
from ..viewer.sections_state import SectionsState, section_updates_job
from ..viewer.stack_source import StackSource, section_layers
from .common import GeneBox
from .workers import Job, LatestRequest

COLORMAPS = ["viridis", "magma", "inferno", "plasma", "turbo", "gray"]


class SectionsWidget(QWidget):
    """Lists the sections of the stack in the viewer, sets their z / units / normalization, and
    recolours them by a searchable gene."""

    def __init__(self, viewer: Viewer):
        super().__init__()
        self.viewer = viewer
        self.state = SectionsState()
        self.summary = QPlainTextEdit(readOnly=True)
        self.summary.setMaximumHeight(170)
        self.gene = GeneBox()
        self.gene.geneChanged.connect(self.set_gene)
        self.colormap = QComboBox()
        self.colormap.addItems(COLORMAPS)
        self.colormap.currentTextChanged.connect(lambda _: self.set_gene(self.gene.currentText()))
        self.size = QDoubleSpinBox(minimum=0.1, maximum=10.0, singleStep=0.1, value=1.0)
        self.size.valueChanged.connect(self._resize)
        form = QFormLayout()
        form.addRow("Gene", self.gene)
        form.addRow("Colormap", self.colormap)
        form.addRow("Spot size ×", self.size)

        # geometry: z, units, normalization
        self.spacing = QDoubleSpinBox(minimum=0.001, maximum=1e6, decimals=3, singleStep=1.0, value=10.0)
        self.spacing.setSuffix(" µm")
        self.spacing.setToolTip("distance between consecutive sections (file order)")
        self.spacing_btn = QPushButton("Apply spacing")
        self.spacing_btn.clicked.connect(lambda: self.apply_spacing(self.spacing.value()))
        self.z_edit = QLineEdit()
        self.z_edit.setPlaceholderText("z of each section in µm, e.g. 0, 10, 25, 40")
        self.z_btn = QPushButton("Apply z")
        self.z_btn.clicked.connect(lambda: self.apply_z_text(self.z_edit.text()))
        self.unit = QDoubleSpinBox(minimum=1e-6, maximum=1e6, decimals=4, value=1.0)
        self.unit.setToolTip("coordinates as read × factor = µm (e.g. 200 for ST array indices: spots "
                             "200 µm centre to centre)")
        self.unit_btn = QPushButton("Apply")
        self.unit_btn.clicked.connect(lambda: self.apply_unit_factor(self.unit.value()))
        self.normalize = QComboBox()
        self.normalize.addItems(["log1p", "none"])
        self.normalize.setToolTip("log1p: log(1 + counts per 10,000) per cell; none: values as given")
        self.normalize_btn = QPushButton("Apply")
        self.normalize_btn.clicked.connect(lambda: self.apply_normalize(self.normalize.currentText()))
        geo = QFormLayout()
        geo.addRow("z spacing", _row(self.spacing, self.spacing_btn))
        geo.addRow("z per section", _row(self.z_edit, self.z_btn))
        geo.addRow("Unit factor (× → µm)", _row(self.unit, self.unit_btn))
        geo.addRow("Normalization", _row(self.normalize, self.normalize_btn))
        self.geometry = QGroupBox("Stack geometry and values")
        self.geometry.setLayout(geo)
        self.message = QLabel("")
        self.message.setWordWrap(True)

        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Measured sections (z in µm, stack frame)"))
        lay.addWidget(self.summary)
        lay.addWidget(self.geometry)
        lay.addWidget(self.message)
        lay.addLayout(form)
        lay.addStretch(1)
        self.updates = LatestRequest(section_updates_job, on_yield=self._queue, on_return=lambda _: self._queue(None),
                                     what="colouring the sections")
        self._reframe = False  # frame the sections again once they have moved (unit factor)
        self._todo, self._draining = deque(), False  # layer updates waiting for their event-loop turn
        self.renorm = Job("normalizing the sections", on_done=self._normalized, on_error=self._norm_failed,
                          on_finish=lambda: self.geometry.setEnabled(self.stack is not None))
        self._norm_cb = None
        self.state.stack_changed.connect(self._on_stack)
        self.state.changed.connect(self._changed)
        self.state.failed.connect(self._error)
        self.source = StackSource(viewer, track_layers=True)  # sections joining the stack: a new summary
        self.source.changed.connect(self.state.set_stack)
        self.source.update()

    @property
    def stack(self):
        return self.state.stack

    def refresh(self, *_, force: bool = False):
        self.source.update(force=force)

    def _on_stack(self, stack):
        self.geometry.setEnabled(stack is not None)
        if stack is None:
            self.summary.setPlainText("No sections loaded. File ▸ Open a .h5ad / Visium outs/ folder, "
                                      "or File ▸ Open Sample ▸ napari-inrst.")
            self.gene.set_genes([])
            return
        self._show_summary()
        layers = section_layers(self.viewer, stack)
        current = layers[0].metadata.get("gene") if layers else None
        self.gene.set_genes(stack.genes, current)
        self.unit.blockSignals(True)
        self.unit.setValue(stack.unit_factor)
        self.unit.blockSignals(False)
        self.normalize.setCurrentText(stack.normalize)
        za = stack.report.get("z_assumed")
        if za:
            self.spacing.setValue(za["spacing_um"])
        self.z_edit.setText(self.state.z_text())

    def _show_summary(self):
        self.summary.setPlainText(self.stack.summary())

    # --- geometry (the state changes the stack; the layers follow here) ------------------------
    def _changed(self, what: str):
        """After an in-place change: move the layers (in a worker), say it, tell the other widgets."""
        from ..viewer.session import stack_changed

        self._update_layers(None, move=True)  # the gene and colours the layers show (maybe View's)
        self._show_summary()
        self.z_edit.setText(self.state.z_text())
        self.normalize.setCurrentText(self.stack.normalize)
        self.message.setText(f"{what}. A field trained before this no longer matches the sections: train again.")
        stack_changed(self.viewer, self.stack)

    def _update_layers(self, gene, *, move: bool):
        """Recolour (and with ``move`` re-place) the section layers in a worker; each layer keeps the
        cells it shows (level of detail). ``gene`` None: the gene (and colormap) they show."""
        if self.stack is None:
            return
        layers = section_layers(self.viewer, self.stack)
        if gene is None or gene not in self.stack.genes:
            gene = next((lyr.metadata.get("gene") for lyr in layers if lyr.metadata.get("gene") in self.stack.genes),
                        None)
        if gene is None or not layers:
            return
        cmap = self.colormap.currentText() if not move else layers[0].metadata.get("colormap") or "viridis"
        items = [(lyr, lyr.metadata[SECTION_KEY], (lyr.metadata.get(LOD_KEY) or {}).get("idx")) for lyr in layers]
        self._todo.clear()
        self.updates.submit(self.stack, gene, cmap, items, move=move,
                            size_factor=self.size.value())

    def _queue(self, item):
        self._todo.append(item)
        if not self._draining:
            self._draining = True
            QTimer.singleShot(0, self._apply_next)

    def _apply_next(self):
        """One layer's update (a napari update of ≤ LOD_CAP points), then the next in a later turn."""
        if not self._todo:
            self._draining = False
            return
        QTimer.singleShot(0, self._apply_next)
        item = self._todo.popleft()
        if item is None:  # the last layer is in
            if self._reframe:
                self._reframe = False
                self.viewer.reset_view()  # the sections moved (scaled): frame them again
            return
        layer, gene, cmap, update, move, size = item
        if layer in self.viewer.layers:
            apply_section_update(layer, gene, update, move=move)
            layer.metadata["colormap"] = cmap
            if size is not None:
                layer.metadata["spot_um"] = size / self.size.value()
                if not np.allclose(layer.size, size):
                    layer.size = size

    @property
    def busy(self) -> bool:
        """True while layers are being recoloured/moved or values renormalized."""
        return self.updates.busy or bool(self._todo) or self._draining or self.renorm.running

    def _error(self, exc):
        from napari.utils.notifications import show_error

        self.message.setText(f"Not applied: {exc}")
        show_error(str(exc))

    def apply_z(self, z):
        """Set the z (µm) of every section."""
        return self.state.apply_z(z)

    def apply_spacing(self, spacing: float):
        """Sections ``spacing`` µm apart in their order, the first at z = 0."""
        return self.state.apply_spacing(spacing)

    def apply_z_text(self, text: str):
        return self.state.apply_z_text(text)

    def apply_unit_factor(self, factor: float):
        """Coordinates as read × ``factor`` = µm."""
        self._reframe = True  # when the layers have moved
        ok = self.state.apply_unit_factor(factor)
        self._reframe = ok and self._reframe
        return ok

    def apply_normalize(self, normalize: str):
        """Normalize the values another way (from the raw values read), in a worker: True when
        started (the stack changes when it ends; :attr:`busy` until the layers show it)."""
        def run(work, done, fail):
            self._norm_cb = (done, fail)
            self.geometry.setEnabled(False)  # no other change of the stack meanwhile
            self.message.setText(f"Normalizing ({normalize})…")
            self.renorm.start(work)

        ok = self.state.apply_normalize(normalize, run=run)
        if not ok and self.stack is not None:
            self.normalize.setCurrentText(self.stack.normalize)
        return ok

    def _normalized(self, adatas):
        if self._norm_cb is not None:
            self._norm_cb[0](adatas)

    def _norm_failed(self, exc):
        self.message.setText(f"Not applied: {exc}")
        if self.stack is not None:
            self.normalize.setCurrentText(self.stack.normalize)

    # --- colours -------------------------------------------------------------------------------
    def set_gene(self, gene: str):
        """Colour every section of the stack by ``gene`` with shared contrast limits (in a worker)."""
        if self.stack is None or gene not in self.stack.genes:
            return
        self._update_layers(gene, move=False)

    def _resize(self, factor: float):
        if self.stack is None:
            return
        for layer in section_layers(self.viewer, self.stack):
            spot = layer.metadata.get("spot_um")  # measured in the worker (a neighbour search)
            if spot is None:
                spot = layer.metadata["spot_um"] = self.stack[layer.metadata[SECTION_KEY]].spot_diameter_um()
            layer.size = spot * factor

    def cleanup(self):
        self.updates.cancel()
        self._todo.clear()
        self.renorm.cancel()


def _row(*widgets):
    w = QWidget()
    h = QHBoxLayout(w)
    h.setContentsMargins(0, 0, 0, 0)
    for x in widgets:
        h.addWidget(x)
    return w
