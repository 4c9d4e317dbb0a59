"""The "Genes" group of the View widget: search a gene (it replaces the selected one), Add (show
it too), the list of genes shown with Remove and a colormap each, Auto contrast, colorbars."""

from __future__ import annotations

from napari.utils.notifications import show_error
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QCheckBox, QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QListWidget, QPushButton

from ...errors import InputError
from ...viewer.view_state import COLORMAPS
from ..common import GeneBox, set_quietly


class GenePanel(QGroupBox):
    """Edits the genes, colormaps and colorbars of a :class:`~napari_inrst.viewer.view_state.ViewState`
    and follows its events; ``autoContrastRequested`` asks the owner to recompute the limits."""

    autoContrastRequested = Signal()

    def __init__(self, state, parent=None):
        super().__init__("Genes", parent)
        self.state = state
        self.gene = GeneBox()
        self.gene.geneChanged.connect(self._picked)
        self.add_btn = QPushButton("Add")
        self.add_btn.setToolTip("Show this gene too (one colormap each, additive blending)")
        self.add_btn.clicked.connect(lambda: self._guard(state.add_gene, self.gene.currentText()))
        self.gene_list = QListWidget()
        self.gene_list.setMaximumHeight(90)
        self.gene_list.currentTextChanged.connect(self._selected)
        self.remove_btn = QPushButton("Remove")
        self.remove_btn.clicked.connect(self._remove_selected)
        self.colormap = QComboBox()
        self.colormap.addItems(COLORMAPS)
        self.colormap.currentTextChanged.connect(self._colormap_picked)
        self.auto_btn = QPushButton("Auto contrast")
        self.auto_btn.clicked.connect(self.autoContrastRequested)
        self.colorbar_box = QCheckBox("Colorbars on canvas")
        self.colorbar_box.setChecked(state.colorbars)
        self.colorbar_box.setToolTip("One colorbar per shown gene (its colormap and contrast limits)")
        self.colorbar_box.toggled.connect(state.set_colorbars)
        form = QFormLayout(self)
        row = QHBoxLayout()
        row.addWidget(self.gene, 1)
        row.addWidget(self.add_btn)
        form.addRow("Search", row)
        form.addRow(self.gene_list)
        row2 = QHBoxLayout()
        row2.addWidget(self.colormap, 1)
        row2.addWidget(self.remove_btn)
        form.addRow("Colormap", row2)
        row3 = QHBoxLayout()
        row3.addWidget(self.auto_btn, 1)
        row3.addWidget(self.colorbar_box)
        form.addRow(row3)
        state.field_changed.connect(self._on_field)
        state.genes_changed.connect(self._on_genes)
        state.colorbars_changed.connect(lambda on: set_quietly(self.colorbar_box, "setChecked", on))
        state.colormap_changed.connect(self._colormap_set)

    def selected(self) -> str | None:
        """The gene selected in the list (None when none is)."""
        item = self.gene_list.currentItem()
        return item.text() if item is not None else None

    @staticmethod
    def _guard(fn, *args):
        try:
            fn(*args)
        except InputError as exc:
            show_error(str(exc))

    def _remove_selected(self):
        gene = self.selected()
        if gene is not None:
            self.state.remove_gene(gene)

    def _picked(self, gene):
        """Picking a gene in the box replaces the selected one (Add keeps both)."""
        self.state.pick_gene(gene, self.selected())

    def _selected(self, gene):
        if gene in self.state.colormaps:
            set_quietly(self.colormap, "setCurrentText", self.state.colormaps[gene])

    def _colormap_set(self, gene, _cmap):
        if gene == self.selected():
            self._selected(gene)

    def _colormap_picked(self, cmap):
        gene = self.selected()
        if gene is not None:
            self.state.set_colormap(gene, cmap)

    def _on_field(self, field):
        self.gene_list.clear()
        if field is None:
            self.gene.set_genes([])
            return
        self.gene.set_genes(list(field.genes), self.state.genes[0] if self.state.genes else None)
        self.gene_list.addItems(self.state.genes)
        self.gene_list.setCurrentRow(len(self.state.genes) - 1)

    def _on_genes(self, change):
        for old, new in change.replaced:
            self.gene_list.item(change.old.index(old)).setText(new)
        for gene in change.removed:
            items = self.gene_list.findItems(gene, Qt.MatchFlag.MatchExactly)
            if items:
                self.gene_list.takeItem(self.gene_list.row(items[0]))
        for gene in change.added:
            self.gene_list.addItem(gene)
            self.gene_list.setCurrentRow(self.gene_list.count() - 1)
        if change.added and list(change.new) != [self.gene_list.item(i).text() for i in range(self.gene_list.count())]:
            self.gene_list.clear()  # set_genes reordered them
            self.gene_list.addItems(list(change.new))
            self.gene_list.setCurrentRow(len(change.new) - 1)
