"""Helpers shared by the widgets: finding the stack in the viewer, a searchable gene box."""

from __future__ import annotations

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QComboBox, QCompleter

from ..viewer.layers import SECTION_KEY, STACK_KEY


def find_stack(viewer):
    """The :class:`SectionStack` shared by the plugin's section layers (the last one added)."""
    for layer in reversed(list(viewer.layers)):
        st = layer.metadata.get(STACK_KEY) if hasattr(layer, "metadata") else None
        if st is not None:
            return st
    return None


def section_layers(viewer, stack=None):
    """Points layers of the sections of ``stack`` (all stacks if None), in section order."""
    out = []
    for layer in viewer.layers:
        md = getattr(layer, "metadata", {})
        if SECTION_KEY in md and (stack is None or md.get(STACK_KEY) is stack):
            out.append(layer)
    return sorted(out, key=lambda lyr: lyr.metadata[SECTION_KEY])


class GeneBox(QComboBox):
    """An editable combo box over thousands of genes with type-to-search (prefix, then substring)."""

    geneChanged = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setEditable(True)
        self.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.setMaxVisibleItems(20)
        comp = self.completer()
        comp.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        comp.setFilterMode(Qt.MatchFlag.MatchContains)
        comp.setCompletionMode(QCompleter.CompletionMode.PopupCompletion)
        self.currentTextChanged.connect(self._changed)
        self._genes: list[str] = []

    def set_genes(self, genes, current: str | None = None):
        self.blockSignals(True)
        self.clear()
        self._genes = list(genes)
        self.addItems(self._genes)
        if current in self._genes:
            self.setCurrentIndex(self._genes.index(current))
        self.blockSignals(False)

    def search(self, text: str) -> list[str]:
        """Genes matching ``text``: prefix matches first, then substring matches (case-insensitive)."""
        t = text.lower()
        pre = [g for g in self._genes if g.lower().startswith(t)]
        sub = [g for g in self._genes if t in g.lower() and not g.lower().startswith(t)]
        return pre + sub

    def _changed(self, text: str):
        if text in self._genes:
            self.geneChanged.emit(text)
