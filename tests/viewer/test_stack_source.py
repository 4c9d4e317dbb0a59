"""StackSource: which stack the viewer holds, followed through layer events (no Qt)."""

import subprocess
import sys

import numpy as np

from napari_inrst.viewer.layers import stack_layer_data


def test_view_models_import_without_qt():
    code = ("import sys; import napari_inrst.viewer.qc_state, napari_inrst.viewer.align_state, "
            "napari_inrst.viewer.sections_state, napari_inrst.viewer.stack_source, napari_inrst.viewer.open_job; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_stack_source_follows_the_viewers_layers(small):
    from napari.components import ViewerModel

    from napari_inrst.viewer.stack_source import StackSource

    stack, _ = small
    viewer = ViewerModel()
    seen = []
    src = StackSource(viewer, track_layers=True)
    src.changed.connect(seen.append)
    assert src.update() and seen == [None]
    assert not src.update()  # nothing changed: no event
    layers = [viewer.add_points(data, **kw) for data, kw, _ in stack_layer_data(stack)]
    assert src.stack is stack and seen[-1] is stack
    n = len(seen)
    assert n == 1 + len(layers)  # track_layers: each section joining the stack is news
    viewer.add_image(np.zeros((4, 4)))  # not a section: no event
    assert len(seen) == n
    plain = StackSource(viewer)
    plain.update()
    viewer.layers.remove(layers[0])
    assert src.stack is stack and len(seen) == n + 1 and plain.stack is stack
    viewer.layers.clear()
    assert src.stack is None and seen[-1] is None and plain.stack is None
    src.disconnect()
    data, kw, _ = stack_layer_data(stack)[0]
    viewer.add_points(data, **kw)
    assert src.stack is None and plain.stack is stack

