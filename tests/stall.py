"""A UI stall meter for GUI tests and benchmarks: a 10 ms QTimer on the UI thread records when it
actually fires; a gap much longer than the interval is time the event loop was blocked.

    with StallMeter() as meter:
        ...drive the widget, qtbot.wait(...)...
    meter.summary()  # {'n': ..., 'median_ms': ..., 'p99_ms': ..., 'max_ms': ...}

Gaps are wall time between consecutive timer callbacks (ms); the timer's own interval is included
(a perfectly idle loop reads ~10 ms). Reuse it anywhere a Qt event loop runs (pytest-qt, Xvfb).
"""

from __future__ import annotations

import os
import time

import numpy as np


class StallMeter:
    def __init__(self, interval_ms: int = 10):
        self.interval_ms = int(interval_ms)
        self.stamps: list[float] = []
        self._timer = None

    def _tick(self):
        self.stamps.append(time.perf_counter())

    def start(self):
        from qtpy.QtCore import Qt, QTimer

        self.stamps = [time.perf_counter()]
        self._timer = QTimer()
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(self.interval_ms)
        self._timer.timeout.connect(self._tick)
        self._timer.start()
        return self

    def reset(self):
        """Forget what was measured so far (e.g. a click's own work); keep measuring."""
        self.stamps = [time.perf_counter()]
        return self

    def stop(self):
        if self._timer is not None:
            self._timer.stop()
            self._tick()
            self._timer = None
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def gaps_ms(self) -> np.ndarray:
        return np.diff(np.asarray(self.stamps)) * 1e3

    def summary(self) -> dict:
        g = self.gaps_ms
        if not len(g):
            return {"n": 0, "median_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
        return {"n": int(len(g)), "median_ms": float(np.median(g)), "p99_ms": float(np.percentile(g, 99)),
                "max_ms": float(g.max()), "over_100ms": int((g > 100).sum())}

    @property
    def max_ms(self) -> float:
        g = self.gaps_ms
        return float(g.max()) if len(g) else 0.0

    def report(self) -> str:
        """One line: ticks, max, p99, median, gaps > 100 ms and the machine's load."""
        s = self.summary()
        if not s["n"]:
            return "0 ticks"
        return (f"{s['n']} ticks, max {s['max_ms']:.0f} ms, p99 {s['p99_ms']:.0f} ms, median {s['median_ms']:.1f} ms, "
                f"{s['over_100ms']} gaps > 100 ms (load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
