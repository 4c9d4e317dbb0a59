"""The "3D volume" group of the View widget: resolution, rendering mode, "Show 3D volume"."""

from __future__ import annotations

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QFormLayout, QGroupBox, QPushButton, QSpinBox

from ...render.grids import VOLUME_MAX, VOLUME_MIN
from ...viewer.view_state import RENDERINGS
from ..common import set_quietly


class VolumePanel(QGroupBox):
    """Edits ``state.resolution`` / ``state.rendering``; ``showRequested`` when the button is pressed."""

    showRequested = Signal()

    def __init__(self, state, parent=None):
        super().__init__("3D volume", parent)
        self.resolution = QSpinBox(minimum=VOLUME_MIN, maximum=VOLUME_MAX, singleStep=32, value=state.resolution)
        self.resolution.setSuffix(" voxels (longest axis)")
        self.resolution.valueChanged.connect(state.set_resolution)
        self.rendering = QComboBox()
        self.rendering.addItems(RENDERINGS)
        self.rendering.setCurrentText(state.rendering)
        self.rendering.currentTextChanged.connect(state.set_rendering)
        self.volume_btn = QPushButton("Show 3D volume")
        self.volume_btn.clicked.connect(self.showRequested)
        form = QFormLayout(self)
        form.addRow("Resolution", self.resolution)
        form.addRow("Rendering", self.rendering)
        form.addRow(self.volume_btn)
        state.volume_changed.connect(lambda n: set_quietly(self.resolution, "setValue", n))
        state.rendering_changed.connect(lambda mode: set_quietly(self.rendering, "setCurrentText", mode))
