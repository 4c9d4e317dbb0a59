"""Widget "Sections": what is loaded, and how the measured spots are coloured."""


from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QPlainTextEdit,
    QVBoxLayout,
    QWidget,
)

from napari.viewer import Viewer

from ..layers import gene_contrast
from .common import GeneBox, find_stack, section_layers

COLORMAPS = ["viridis", "magma", "inferno", "plasma", "turbo", "gray"]


class SectionsWidget(QWidget):
    """Lists the sections of the stack in the viewer and recolours them by a searchable gene."""

    def __init__(self, viewer: Viewer):
        super().__init__()
        self.viewer = viewer
        self.stack = None
        self.summary = QPlainTextEdit(readOnly=True)
        self.summary.setMaximumHeight(160)
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
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Measured sections (z in µm, stack frame)"))
        lay.addWidget(self.summary)
        lay.addLayout(form)
        lay.addStretch(1)
        viewer.layers.events.inserted.connect(self.refresh)
        viewer.layers.events.removed.connect(self.refresh)
        self.refresh()

    def refresh(self, *_):
        stack = find_stack(self.viewer)
        if stack is self.stack:
            return
        self.stack = stack
        if stack is None:
            self.summary.setPlainText("No sections loaded. File ▸ Open a .h5ad / Visium outs/ folder, "
                                      "or File ▸ Open Sample ▸ napari-inrst.")
            self.gene.set_genes([])
            return
        self.summary.setPlainText(stack.summary())
        layers = section_layers(self.viewer, stack)
        current = layers[0].metadata.get("gene") if layers else None
        self.gene.set_genes(stack.genes, current)

    def set_gene(self, gene: str):
        """Colour every section of the stack by ``gene`` with shared contrast limits."""
        if self.stack is None or gene not in self.stack.genes:
            return
        from ..render.sections import recolor_sections

        # colours once per layer; large sections keep their level-of-detail subset
        recolor_sections(section_layers(self.viewer, self.stack), self.stack, gene,
                         self.colormap.currentText(), gene_contrast(self.stack, gene))

    def _resize(self, factor: float):
        if self.stack is None:
            return
        for layer in section_layers(self.viewer, self.stack):
            s = self.stack[layer.metadata["inrst_section"]]
            layer.size = s.spot_diameter_um() * factor
