"""Event-loop stalls while the Train widget trains: a 10 ms QTimer on the UI thread records the
gaps between its ticks (a gap well above 10 ms is time the UI could not react).

    xvfb-run -a python scripts/train_stalls.py [--data ../shared/data/breast_st] [--steps 300] [--genes 0]
        [--runner child|thread] [--nice 10] [--no-preview] [--json]

Opens the folder through the napari reader (the synthetic sample without --data), sets the unit
factor / z spacing given, opens the Train widget as a user would, waits for its background
imports, clicks Train and measures until training ends. Prints the start click (adding the preview
layer) and the training itself separately: ticks, max, p99, median,
gaps > 100 ms, the machine's load (a loaded machine starves the UI thread by itself), and the
longest time spent in each of the widget's UI-thread callbacks (taking a record, the UI tick,
the end of the fit): a stall much longer than those is the UI thread waiting — for the
interpreter lock (``--runner thread``) or for a core.

``--runner thread`` trains in a worker thread of the viewer's process (the way before
field/background.py), ``child`` (default) in a child process at niceness ``--nice``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))


def ui_thread_clock() -> tuple[float, float]:
    """(CPU s, run-queue wait s) of the calling thread so far: the wait is time it was runnable but
    not running (a loaded machine; Linux ``schedstat``; 0 where unavailable)."""
    wait = 0.0
    try:
        with open("/proc/thread-self/schedstat") as fh:
            wait = int(fh.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        pass
    return time.thread_time(), wait


def timed_callbacks(widget) -> dict:
    """Wrap the Train widget's UI-thread callbacks; returns {name: [ms, ...]} (wall) and
    {name_cpu: [ms, ...]} (the UI thread's CPU time), filled as they run."""
    times: dict[str, list] = {k: [] for k in ("take", "tick", "done", "take_cpu", "tick_cpu", "done_cpu")}

    def wrap(obj, name, key):
        orig = getattr(obj, name)

        def timed(*a):
            t, c = time.perf_counter(), time.thread_time()
            try:
                return orig(*a)
            finally:
                times[key].append((time.perf_counter() - t) * 1e3)
                times[key + "_cpu"].append((time.thread_time() - c) * 1e3)
        setattr(obj, name, timed)
    wrap(widget.state, "take", "take")
    widget.job._on_progress = widget.state.take
    wrap(widget, "_update_ui", "tick")
    widget._ui_timer.timeout.disconnect()
    widget._ui_timer.timeout.connect(widget._update_ui)
    wrap(widget, "_on_done", "done")
    widget.job._on_done = widget._on_done
    return times


def measure(viewer, w, *, runner="child", nice=None, preview=True, settle_ms=8000) -> dict:
    """Click Train on widget ``w`` and measure the UI until the fit ends → figures (ms)."""
    from qtpy.QtCore import QEventLoop, QTimer
    from stall import StallMeter

    w.state.in_child = runner == "child"
    w.state.nice = nice
    if not preview:
        w.state.previews.gene = ""
    loop = QEventLoop()
    QTimer.singleShot(settle_ms, loop.quit)  # the widget's background imports (torch) settle
    loop.exec()
    times = timed_callbacks(w)
    marks = {}
    w.job._on_progress = lambda d, take=w.job._on_progress: (marks.setdefault("first_record", time.perf_counter()),
                                                             take(d))
    meter = StallMeter().start()
    t0 = time.perf_counter()
    w.start()
    click = time.perf_counter() - t0
    meter.reset()
    cpu0, wait0 = ui_thread_clock()
    t1 = time.perf_counter()
    w.worker.finished.connect(loop.quit)
    loop.exec()
    meter.stop()
    cpu1, wait1 = ui_thread_clock()
    wall = time.perf_counter() - t1
    s = meter.summary()
    out = {"runner": runner, "nice": nice, "preview": preview, "start_click_ms": round(click * 1e3),
           "max_ms": round(s["max_ms"], 1), "p99_ms": round(s["p99_ms"], 1), "median_ms": round(s["median_ms"], 1),
           "over_100ms": s["over_100ms"], "ticks": s["n"], "load": round(os.getloadavg()[0], 1),
           "seconds": round(time.perf_counter() - t0, 1),
           # the UI thread's share of the run: busy (CPU) and runnable but waiting for a core
           "ui_cpu_frac": round((cpu1 - cpu0) / wall, 3), "ui_runqueue_wait_frac": round((wait1 - wait0) / wall, 3)}
    for k, v in times.items():
        out[f"{k}_handler_max_ms"] = round(max(v), 1) if v else 0.0
    # when the long gaps happened (s after the click; a gap ends at its stamp) and when the first
    # record arrived: start-up (process start, imports, data) vs training vs the end
    stamps, gaps = meter.stamps[1:], meter.gaps_ms
    out["first_record_s"] = round(marks["first_record"] - t0, 2) if marks else None
    out["gaps_over_100ms_at_s"] = [[round(t - t0 - g / 1e3, 2), round(float(g))] for t, g in zip(stamps, gaps)
                                   if g > 100][:20]
    out["report"] = meter.report()
    out["status"] = w.status.text().splitlines()[0]
    return out


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--data", default=None, help="folder of sections (default: the synthetic sample)")
    p.add_argument("--unit-factor", type=float, default=None)
    p.add_argument("--spacing", type=float, default=None)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--genes", type=int, default=0, help="0 = auto (as napari-inrst fit)")
    p.add_argument("--runner", choices=["child", "thread"], default="child")
    p.add_argument("--nice", type=int, default=None, help="the child's niceness (default: the widget's)")
    p.add_argument("--no-preview", action="store_true")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    a = p.parse_args(argv)

    import napari

    from napari_inrst._qt.sections import SectionsWidget
    from napari_inrst._qt.train import TrainWidget

    viewer = napari.Viewer(show=True)
    if a.data:
        viewer.open(a.data, plugin="napari-inrst")
    else:
        viewer.open_sample("napari-inrst", "synthetic_aligned")
    sections = SectionsWidget(viewer)
    viewer.window.add_dock_widget(sections)
    if a.unit_factor:
        sections.apply_unit_factor(a.unit_factor)
    if a.spacing:
        sections.apply_spacing(a.spacing)
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.steps.setValue(a.steps)
    w.genes.setValue(a.genes)
    out = measure(viewer, w, runner=a.runner, nice=a.nice, preview=not a.no_preview)
    if a.json:
        print(json.dumps(out), flush=True)
    else:
        print(f"start click: {out['start_click_ms']} ms (adds the preview layer)")
        print(f"training ({a.runner}{'' if a.runner == 'thread' else f', nice {a.nice}'}): {out['report']}")
        print("longest UI-thread callbacks: " + ", ".join(f"{k} {out[f'{k}_handler_max_ms']} ms"
                                                         for k in ("take", "tick", "done")))
        print(w.status.text())
    viewer.close()


if __name__ == "__main__":
    main()
