"""Event-loop stalls while the Train widget trains: a 10 ms QTimer on the UI thread records the
gaps between its ticks (a gap well above 10 ms is time the UI could not react).

    xvfb-run -a python scripts/train_stalls.py [--data ../shared/data/breast_st] [--steps 300] [--genes 0]

Opens the folder through the napari reader (the synthetic sample without --data), sets the unit
factor / z spacing given, opens the Train widget as a user would, waits for its background
imports, clicks Train and measures until training ends. Prints the start click (adding the preview
layer and napari's progress bar) and the training itself separately: ticks, max, p99, median,
gaps > 100 ms, and the machine's load (a loaded machine starves the UI thread by itself).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--data", default=None, help="folder of sections (default: the synthetic sample)")
    p.add_argument("--unit-factor", type=float, default=None)
    p.add_argument("--spacing", type=float, default=None)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--genes", type=int, default=0, help="0 = auto (as napari-inrst fit)")
    a = p.parse_args(argv)

    import napari
    from qtpy.QtCore import QEventLoop, QTimer

    from stall import StallMeter
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
    if hasattr(w, "genes"):  # (older versions had no Genes control)
        w.genes.setValue(a.genes)
    loop = QEventLoop()
    QTimer.singleShot(8000, loop.quit)  # the widget's background imports (torch) settle
    loop.exec()
    meter = StallMeter()
    meter.start()
    t0 = time.perf_counter()
    w.start()
    click = time.perf_counter() - t0
    meter.reset()
    w.worker.finished.connect(loop.quit)
    loop.exec()
    meter.stop()
    print(f"start click: {click * 1000:.0f} ms (adds the preview layer and napari's progress bar)")
    print("training: " + meter.report())
    print(w.status.text())
    viewer.close()


if __name__ == "__main__":
    main()
