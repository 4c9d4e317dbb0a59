"""The View widget's progress bar and status line, handed to the children that report work."""

from __future__ import annotations

from qtpy.QtWidgets import QLabel, QProgressBar, QVBoxLayout, QWidget

from ...render.display import set_progress


class StatusBar(QWidget):
    """A thin progress bar (0–100) over a word-wrapped status line."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setMaximumHeight(12)
        self.label = QLabel("")
        self.label.setWordWrap(True)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.progress)
        lay.addWidget(self.label)

    def fraction(self, f) -> None:
        """A worker's progress fraction (throttled: see :func:`~napari_inrst.render.display.set_progress`)."""
        set_progress(self.progress, f)

    def percent(self, value: int) -> None:
        self.progress.setValue(int(value))

    def say(self, text: str) -> None:
        self.label.setText(text)

    def repaint_now(self) -> None:
        """Paint at once (while frames are captured on the UI thread, without an event loop)."""
        self.progress.repaint()
        self.label.repaint()
