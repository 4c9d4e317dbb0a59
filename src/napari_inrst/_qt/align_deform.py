"""The Align widget's deformation panel: per section whether its fitted smooth deformation is kept
(a checkable list; switching one off drops it from the stack, one undo step), and for the selected
section a warped-grid overlay (Shapes, paths) and a magnitude map (Image, ``deformation |d| (µm)``,
with its colorbar), both 2D in µm like the Align overlays. What is drawn comes from
:mod:`napari_inrst.viewer.deform_view`; the state is
:class:`~napari_inrst.viewer.align_state.AlignState`."""

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QGroupBox,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QVBoxLayout,
)

from ..render.display import OVERLAY_KEY
from ..viewer.deform_view import MAGNITUDE_LABEL, magnitude_map, summary, warped_grid

GRID_LAYER = "Align: deformation grid"
MAGNITUDE_LAYER = f"Align: {MAGNITUDE_LABEL}"
#: the layers' common keywords: 2D overlays in µm, like the section layers' y/x
_UNITS = {"units": "µm", "axis_labels": ("y", "x")}


class DeformationPanel(QGroupBox):
    """Sections with a fitted deformation (tick = kept); the selected one's grid and |d| map."""

    def __init__(self, viewer, state, parent=None):
        super().__init__("Deformation (non-rigid)", parent)
        self.viewer, self.state = viewer, state
        self.list = QListWidget()
        self.list.setToolTip("ticked: the section's deformation is kept (the overlay, Train and the model "
                             "file use it); untick to keep the rigid placement only. Undo steps back.")
        self.show_box = QCheckBox("Show the selected section's deformation (grid, |d| map)")
        self.show_box.setChecked(True)
        self.legend = QLabel("Run the alignment with “Non-rigid (deform)” to fit one per section.")
        self.legend.setWordWrap(True)
        lay = QVBoxLayout(self)
        for w in (self.list, self.show_box, self.legend):
            lay.addWidget(w)
        self.list.itemChanged.connect(self._item_changed)
        self.list.currentRowChanged.connect(lambda _: self.update_layers())
        self.show_box.toggled.connect(lambda _: self.update_layers())
        state.stack_changed.connect(lambda _: self.fill())
        state.deform_changed.connect(self._on_deform)
        state.moved.connect(self._on_moved)

    @property
    def selected(self) -> int:
        return self.list.currentRow()

    def fill(self):
        """One row per section: checkable where a deformation was fitted; the first such selected."""
        st = self.state
        self.list.blockSignals(True)
        self.list.clear()
        first = -1
        for i, name in enumerate([] if st.stack is None else st.stack.names):
            item = QListWidgetItem(name)
            if st.has_deformation(i):
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(Qt.CheckState.Checked if st.deformation_on(i) else Qt.CheckState.Unchecked)
                first = i if first < 0 else first
            else:
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsUserCheckable)
                item.setText(f"{name} (rigid only)")
            self.list.addItem(item)
        if first >= 0:
            self.list.setCurrentRow(first)
        self.list.blockSignals(False)
        self.update_layers()

    def select(self, i: int):
        self.list.setCurrentRow(int(i))

    def set_kept(self, i: int, on: bool):
        """Tick or untick section ``i`` (as the user does)."""
        item = self.list.item(int(i))
        if item is not None:
            item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)

    def _item_changed(self, item):
        i = self.list.row(item)
        if self.state.has_deformation(i):
            self.state.set_deformation_on(i, item.checkState() == Qt.CheckState.Checked)

    def _on_deform(self, i: int):
        if i < 0:
            self.fill()
            return
        item = self.list.item(i)
        if item is not None and self.state.has_deformation(i):
            self.list.blockSignals(True)
            item.setCheckState(Qt.CheckState.Checked if self.state.deformation_on(i) else Qt.CheckState.Unchecked)
            self.list.blockSignals(False)
        self.update_layers()

    def _on_moved(self, i: int):
        if i >= 0 and i == self.selected:  # a manual correction moves the section's grid too
            self.update_layers()

    # --- layers -------------------------------------------------------------------------------
    def _hide(self):
        for name in (GRID_LAYER, MAGNITUDE_LAYER):
            if name in self.viewer.layers:
                self.viewer.layers[name].visible = False

    def update_layers(self):
        """The selected section's grid and |d| map (hidden when it keeps no deformation)."""
        st, i = self.state, self.selected
        if st.stack is None or not 0 <= i < len(st.stack):
            self._hide()
            return
        s, d = st.stack[i], st.deformation(i)
        if d is None:
            self.legend.setText(f"{s.name}: deformation switched off (rigid only)" if st.has_deformation(i)
                                else summary(s.name, None, s))
            self._hide()
            return
        self.legend.setText(summary(s.name, d, s))
        if not self.show_box.isChecked():
            self._hide()
            return
        img, scale, translate = magnitude_map(s, d)
        hi = float(max(np.nanmax(img), 1e-6)) if np.isfinite(img).any() else 1.0
        paths, _ = warped_grid(s.transform, d)
        width = 0.004 * float(max(np.ptp(s.xy, axis=0).max(), 1.0))
        layers = self.viewer.layers
        if MAGNITUDE_LAYER in layers:
            mag = layers[MAGNITUDE_LAYER]
            mag.data, mag.scale, mag.translate = img, scale, translate
            mag.contrast_limits = (0.0, hi)
            mag.visible = True
        else:
            mag = self.viewer.add_image(img, name=MAGNITUDE_LAYER, scale=scale, translate=translate,
                                        colormap="inferno", contrast_limits=(0.0, hi), opacity=0.7,
                                        metadata={OVERLAY_KEY: True}, **_UNITS)
            if getattr(mag, "colorbar", None) is not None:
                mag.colorbar.visible = True
        if GRID_LAYER in layers:
            grid = layers[GRID_LAYER]
            grid.data = paths
            grid.edge_width = width
            grid.visible = True
        else:
            self.viewer.add_shapes(paths, shape_type="path", name=GRID_LAYER, edge_color="#00e5ff",
                                   edge_width=width, metadata={OVERLAY_KEY: True}, **_UNITS)

