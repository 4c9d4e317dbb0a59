"""The QC widget's section overview along z: a tick per measured section, wide gaps shaded and
labelled with their width, excluded / held-out / flagged sections coloured; click a tick to pick it."""

from qtpy.QtCore import QRectF, Qt, Signal
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QWidget

# colours of the z strip
STRIP_SECTION = QColor(230, 230, 230)
STRIP_EXCLUDED = QColor(110, 110, 110)
STRIP_HOLDOUT = QColor(0, 200, 255)
STRIP_FLAGGED = QColor(255, 60, 60)
STRIP_WIDE_GAP = QColor(255, 150, 0, 90)


class SectionStrip(QWidget):
    """The stack along z: a tick per measured section, wide gaps shaded and labelled with their
    width; excluded sections grey, the held-out one cyan, flagged outliers red. Clicking a tick
    emits ``sectionClicked(index)``."""

    sectionClicked = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumHeight(64)
        self.overview = None
        self.flagged: set[int] = set()
        self.holdout = None
        self.setToolTip("sections along z: grey = excluded, cyan = held out, red = flagged outlier; "
                        "shaded = wide gap (missing sections?). Click a section to hold it out.")

    def set_data(self, overview, flagged=(), holdout=None):
        self.overview = overview
        self.flagged = set(int(i) for i in flagged)
        self.holdout = holdout
        self.update()

    def _x(self, z):
        lo, hi = self.overview["z_range_um"]
        m = 24.0
        w = max(self.width() - 2 * m, 1.0)
        return m + (0.5 if hi <= lo else (z - lo) / (hi - lo)) * w

    def colour(self, index: int) -> QColor:
        sec = next(s for s in self.overview["sections"] if s["index"] == index)
        if index in self.flagged:
            return STRIP_FLAGGED
        if index == self.holdout:
            return STRIP_HOLDOUT
        return STRIP_EXCLUDED if sec["excluded"] else STRIP_SECTION

    def paintEvent(self, event):  # noqa: N802 - Qt name
        if not self.overview or not self.overview["sections"]:
            return
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        h = self.height()
        top, bottom = 16.0, h - 18.0
        p.fillRect(self.rect(), QColor(20, 20, 20))
        for g in self.overview["gaps"]:
            x0, x1 = self._x(g["z0"]), self._x(g["z1"])
            if g["wide"]:
                p.fillRect(QRectF(x0, top, x1 - x0, bottom - top), STRIP_WIDE_GAP)
            p.setPen(QColor(255, 170, 60) if g["wide"] else QColor(150, 150, 150))
            p.drawText(QRectF(x0, 0, x1 - x0, top), Qt.AlignmentFlag.AlignCenter, f"{g['width_um']:g}")
        p.setPen(QPen(QColor(120, 120, 120), 1))
        p.drawLine(int(self._x(self.overview["z_range_um"][0])), int(bottom),
                   int(self._x(self.overview["z_range_um"][1])), int(bottom))
        for s in self.overview["sections"]:
            x = self._x(s["z_um"])
            p.setPen(QPen(self.colour(s["index"]), 4))
            p.drawLine(int(x), int(top), int(x), int(bottom))
        p.setPen(QColor(170, 170, 170))
        lo, hi = self.overview["z_range_um"]
        p.drawText(QRectF(0, bottom, 48, 18), Qt.AlignmentFlag.AlignLeft, f"{lo:g}")
        p.drawText(QRectF(self.width() - 80, bottom, 80, 18), Qt.AlignmentFlag.AlignRight, f"{hi:g} µm")
        p.end()

    def index_at(self, x: float):
        if not self.overview or not self.overview["sections"]:
            return None
        best = min(self.overview["sections"], key=lambda s: abs(self._x(s["z_um"]) - x))
        return best["index"] if abs(self._x(best["z_um"]) - x) <= 8 else None

    def mousePressEvent(self, event):  # noqa: N802 - Qt name
        i = self.index_at(event.position().x() if hasattr(event, "position") else event.x())
        if i is not None:
            self.sectionClicked.emit(int(i))
