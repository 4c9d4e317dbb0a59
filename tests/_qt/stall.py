"""A stall meter for GUI tests and scripts: a 10 ms QTimer on the UI thread records the gaps
between its ticks; a gap well above 10 ms is time the event loop could not react."""

from __future__ import annotations

import os
import time

import numpy as np


class StallMeter:
    def __init__(self, interval_ms: int = 10):
        from qtpy.QtCore import QTimer

        self.gaps: list[float] = []  # seconds
        self._last = None
        self._timer = QTimer()
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)

    def _tick(self):
        now = time.perf_counter()
        if self._last is not None:
            self.gaps.append(now - self._last)
        self._last = now

    def start(self):
        self._last = time.perf_counter()
        self._timer.start()

    def reset(self):
        """Forget what was measured so far (e.g. a click's own work); keep measuring."""
        self.gaps.clear()
        self._last = time.perf_counter()

    def stop(self):
        self._timer.stop()

    @property
    def max_ms(self) -> float:
        return 1000 * max(self.gaps) if self.gaps else 0.0

    def report(self) -> str:
        g = np.array(self.gaps or [0.0]) * 1000
        return (f"{len(self.gaps)} ticks, max {g.max():.0f} ms, p99 {np.percentile(g, 99):.0f} ms, "
                f"median {np.median(g):.1f} ms, {(g > 100).sum()} gaps > 100 ms "
                f"(load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
