"""Child widgets of the QC widget: the damaged-sections list, the per-gene score table and the
3D-domains panel (the uncertainty panel: :mod:`.qc_uncertainty`). Each only shows values and reports the user's
choices through Qt signals; the QC widget wires them to :class:`~napari_inrst.viewer.qc_state.QCState`."""

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (QAbstractItemView, QComboBox, QHeaderView, QListWidget,
                            QListWidgetItem, QPushButton, QSpinBox, QTableWidget, QTableWidgetItem, QWidget)

from .common import form_layout

COLUMNS = ("gene", "pearson", "rmse", "ssim")
NO_ANNOTATION = "(none)"


class SectionChecks(QListWidget):
    """The sections, each with a tick box: ticked = missing/damaged (left out of training).
    Emits ``excludedChanged(index, excluded)`` when the user ticks or unticks one."""

    excludedChanged = Signal(int, bool)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMaximumHeight(110)
        self.itemChanged.connect(self._changed)

    def set_sections(self, labels, excluded):
        self.blockSignals(True)
        self.clear()
        for i, (text, ex) in enumerate(zip(labels, excluded)):
            it = QListWidgetItem(text)
            it.setFlags(it.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            it.setCheckState(Qt.CheckState.Checked if ex else Qt.CheckState.Unchecked)
            it.setData(Qt.ItemDataRole.UserRole, i)
            self.addItem(it)
        self.blockSignals(False)

    def set_excluded(self, i: int, excluded: bool = True):
        self.item(i).setCheckState(Qt.CheckState.Checked if excluded else Qt.CheckState.Unchecked)

    def _changed(self, item):
        self.excludedChanged.emit(int(item.data(Qt.ItemDataRole.UserRole)), item.checkState() == Qt.CheckState.Checked)


class _NumItem(QTableWidgetItem):
    """A table cell that sorts by its number (NaN last)."""

    def __init__(self, value: float):
        super().__init__("–" if not np.isfinite(value) else f"{value:.3f}")
        self.value = float(value) if np.isfinite(value) else -np.inf

    def __lt__(self, other):
        if isinstance(other, _NumItem):
            return self.value < other.value
        return super().__lt__(other)


class ScoreTable(QTableWidget):
    """Per-gene scores (Pearson, RMSE, SSIM), sortable by each; ``geneClicked(gene)`` on a click."""

    geneClicked = Signal(str)

    def __init__(self, parent=None):
        super().__init__(0, len(COLUMNS), parent)
        self.setHorizontalHeaderLabels(["gene", "Pearson", "RMSE", "SSIM"])
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.verticalHeader().setVisible(False)
        self.setSortingEnabled(True)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setMinimumHeight(160)
        self.cellClicked.connect(self.row_clicked)

    def fill(self, rows):
        """One row per gene, sorted by Pearson (best first)."""
        self.setSortingEnabled(False)
        self.setRowCount(len(rows))
        for r, row in enumerate(rows):
            self.setItem(r, 0, QTableWidgetItem(row["gene"]))
            for c, key in enumerate(COLUMNS[1:], start=1):
                self.setItem(r, c, _NumItem(row[key]))
        self.setSortingEnabled(True)
        self.sortItems(1, Qt.SortOrder.DescendingOrder)

    def rows(self) -> list[dict]:
        """The table as shown (current sort order)."""
        return [{"gene": self.item(r, 0).text(),
                 **{k: self.item(r, c).value for c, k in enumerate(COLUMNS[1:], start=1)}}
                for r in range(self.rowCount())]

    def row_clicked(self, row, _col=0):
        item = self.item(row, 0)
        if item is not None:
            self.geneClicked.emit(item.text())


class DomainsPanel(QWidget):
    """Number of domains, the annotation to score them against (kept in ``state``, a
    :class:`~napari_inrst.viewer.qc_state.QCState`), and the button that clusters."""

    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.n_domains = QSpinBox(minimum=2, maximum=30, value=state.n_domains)
        self.labels_box = QComboBox()
        self.button = QPushButton("3D domains")
        form_layout([("Domains (k)", self.n_domains), ("Annotations", self.labels_box)], self, tight=True)
        self.n_domains.valueChanged.connect(lambda v: setattr(state, "n_domains", int(v)))
        self.labels_box.currentTextChanged.connect(lambda _: setattr(state, "labels_key", self.labels_key()))

    def set_annotations(self, columns):
        self.labels_box.clear()
        self.labels_box.addItem(NO_ANNOTATION)
        self.labels_box.addItems(list(columns))

    def labels_key(self) -> str | None:
        key = self.labels_box.currentText()
        return key if key and key != NO_ANNOTATION else None
