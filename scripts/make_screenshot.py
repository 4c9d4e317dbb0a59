"""The README's screenshot, made by the project itself from the synthetic sample.

    xvfb-run -a python scripts/make_screenshot.py [docs/screenshot.png]     (or: make screenshot)

Opens the demo (sample sections aligned, widgets docked), trains a field on the sections (short
run, fixed seed), and shows in the *View field* widget two genes at z = 90 µm — a section that
was never measured (the sample skips it) — with the measured sections at that depth shown for
comparison, then saves the whole window.
"""

import sys
from pathlib import Path


def main(out="docs/screenshot.png"):
    from qtpy.QtWidgets import QApplication

    from napari_inrst.cli.demo import open_demo
    from napari_inrst.field import FieldConfig
    from napari_inrst.field.fit import fit_field
    from napari_inrst._qt.common import find_stack

    viewer = open_demo(aligned=True, ndisplay=2)
    viewer.window.resize(1500, 900)
    stack = find_stack(viewer)
    model = fit_field(stack, FieldConfig(steps=600, seed=0))
    dock, view = viewer.window.add_plugin_dock_widget("napari-inrst", "View field", tabify=True)
    dock.raise_()
    view.set_field(model, genes=["LayerB", "BlobA"])
    view.set_z(90.0, sync=True)
    view.fit_view()
    for _ in range(20):
        QApplication.processEvents()
    view.refresh_plane(sync=True)
    for _ in range(20):
        QApplication.processEvents()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(out, canvas_only=False)
    viewer.close()
    print(out)


if __name__ == "__main__":
    main(*sys.argv[1:])
