"""The Train widget's live plot: a :class:`~napari_inrst.viewer.train_state.LossSeries` drawn
with QPainter (training loss as a line, validation error as dots, log-scaled y, one segment per
phase with a dashed boundary). Repaints only when :meth:`update` is called (the Train widget
does so a few times a second), however often points are added."""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QWidget

from ..viewer.train_state import LossSeries


class LossPlot(QWidget):
    def __init__(self, series: LossSeries | None = None, parent=None):
        super().__init__(parent)
        self.setMinimumHeight(130)
        self.series = series if series is not None else LossSeries()

    # the series' points, as the widget's own (tests and scripts read them here)
    @property
    def loss(self):
        return self.series.loss

    @property
    def val(self):
        return self.series.val

    @property
    def phases(self):
        return self.series.phases

    def paintEvent(self, event):
        s = self.series
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), QColor(30, 30, 36))
        pts = s.loss + s.val
        w, h, m = self.width(), self.height(), 6
        p.setPen(QColor(170, 170, 170))
        if len(pts) < 2:
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "loss / validation")
            p.end()
            return
        s_max = max(s.total, max(st for st, _ in pts)) or 1
        ly = [math.log10(v) for _, v in pts]
        lo, hi = min(ly), max(ly)
        if hi - lo < 1e-6:
            lo, hi = lo - 0.5, hi + 0.5

        def xy(step, v):
            return QPointF(m + (w - 2 * m) * step / s_max, h - m - (h - 2 * m) * (math.log10(v) - lo) / (hi - lo))

        p.setPen(QPen(QColor(110, 110, 120), 1, Qt.PenStyle.DashLine))  # phase boundaries
        for k, (s0, _label) in enumerate(s.phases):
            if k > 0:
                x = m + (w - 2 * m) * s0 / s_max
                p.drawLine(QPointF(x, m), QPointF(x, h - m))
        p.setPen(QPen(QColor(90, 170, 255), 1.5))
        for k in sorted(set(s.phase_of_loss)):
            seg = [xy(st, v) for (st, v), ph in zip(s.loss, s.phase_of_loss) if ph == k]
            if len(seg) > 1:
                p.drawPolyline(QPolygonF(seg))
        p.setPen(QPen(QColor(255, 170, 60), 1.5))
        p.setBrush(QColor(255, 170, 60))
        for st, v in s.val:
            p.drawEllipse(xy(st, v), 2.5, 2.5)
        p.setPen(QColor(200, 200, 200))
        last = f"loss {s.loss[-1][1]:.3f}" if s.loss else ""
        if s.val:
            last += f"   val {s.val[-1][1]:.3f}"
        if s.phases:
            last += f"   [{s.phases[-1][1]}]"
        p.drawText(m + 2, m + 12, last)
        p.end()
