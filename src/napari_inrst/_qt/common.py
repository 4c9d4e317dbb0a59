"""Helpers shared by the widgets: the stack in the viewer (Qt-free, :mod:`napari_inrst.viewer.stack_source`),
a searchable gene box, form and row layouts, the viewer events a widget listens to (disconnected
together when it closes)."""

from __future__ import annotations

import contextlib

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QComboBox, QCompleter, QFormLayout, QHBoxLayout

from ..viewer.stack_source import StackSource, find_stack, section_layers  # noqa: F401 - the widgets' imports


class Connections:
    """Callbacks connected to napari/psygnal events (``pairs`` of (event, callback)), all
    disconnected at once by :meth:`clear` (when the widget closes)."""

    def __init__(self, pairs=()):
        self._pairs = []
        for event, callback in pairs:
            self.add(event, callback)

    def add(self, event, callback) -> None:
        event.connect(callback)
        self._pairs.append((event, callback))

    def clear(self) -> None:
        for event, callback in self._pairs:
            with contextlib.suppress(Exception):  # the viewer may already be gone
                event.disconnect(callback)
        self._pairs = []


def set_quietly(widget, setter: str, *args) -> None:
    """``widget.<setter>(*args)`` without emitting its signals (a control following its model)."""
    widget.blockSignals(True)
    try:
        getattr(widget, setter)(*args)
    finally:
        widget.blockSignals(False)


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


def form_layout(rows, parent=None, *, tight: bool = False) -> QFormLayout:
    """A QFormLayout (on ``parent`` when given) with ``rows`` of ``(label, widget or layout)``;
    ``tight``: no margins (a child panel inside another form)."""
    form = QFormLayout(parent) if parent is not None else QFormLayout()
    if tight:
        form.setContentsMargins(0, 0, 0, 0)
    for label, w in rows:
        form.addRow(label, w)
    return form


def hbox(*widgets) -> QHBoxLayout:
    """The widgets side by side."""
    row = QHBoxLayout()
    for w in widgets:
        row.addWidget(w)
    return row
