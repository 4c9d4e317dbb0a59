"""Large sections in the Sections widget: recolouring, moving and renormalizing run in workers (the
UI thread only swaps the results in), and the level-of-detail layers keep their cells and size."""

import threading

import numpy as np

from napari_inrst.render.sections import LOD_KEY, gene_contrast_sampled, gene_values, point_rgba
from napari_inrst.viewer.layers import stack_layer_data
from napari_inrst.viewer.stack_source import section_layers
from tests.large_stack import counts_stack

CAP = 2000  # a lowered level-of-detail cap: 20,000-cell sections count as large


def test_large_sections_recolour_move_and_renormalize_off_the_ui_thread(make_napari_viewer, qtbot, monkeypatch):
    import napari_inrst.stack as stack_pkg
    from napari_inrst._qt.sections import SectionsWidget
    from napari_inrst.render import sections as rs

    monkeypatch.setattr(rs, "LOD_CAP", CAP)
    stack = counts_stack()
    viewer = make_napari_viewer()
    for data, kw, _ in stack_layer_data(stack, gene="g0"):
        viewer.add_points(data, **kw)
    layers = section_layers(viewer, stack)
    assert [len(lyr.data) for lyr in layers] == [CAP] * 3  # a capped subsample per section
    shown = [lyr.metadata[LOD_KEY]["idx"].copy() for lyr in layers]
    w = SectionsWidget(viewer)
    qtbot.addWidget(w)
    qtbot.waitUntil(lambda: not w.busy, timeout=20000)

    on_ui = []  # for each heavy call: was it on the UI thread?

    def spy(fn):
        def wrapped(*a, **k):
            on_ui.append(threading.current_thread() is threading.main_thread())
            return fn(*a, **k)
        return wrapped

    monkeypatch.setattr(rs, "point_rgba", spy(rs.point_rgba))
    monkeypatch.setattr(stack_pkg, "renormalized_sections", spy(stack_pkg.renormalized_sections))

    # recolour: returns before any layer changed; the layers end coloured by the new gene
    w.set_gene("g7")
    assert w.busy and all(lyr.metadata["gene"] == "g0" for lyr in layers)
    qtbot.waitUntil(lambda: not w.busy, timeout=20000)
    g = stack.gene_index("g7")
    contrast = gene_contrast_sampled(stack, "g7")
    for lyr, idx in zip(layers, shown):
        s = stack[lyr.metadata["inrst_section"]]
        assert lyr.metadata["gene"] == "g7" and np.array_equal(lyr.metadata[LOD_KEY]["idx"], idx)
        assert len(lyr.data) == CAP  # the same cells, the same layer size
        np.testing.assert_allclose(lyr.features["g7"], gene_values(s, g)[idx])
        np.testing.assert_allclose(lyr.face_color, point_rgba(gene_values(s, g)[idx], contrast), atol=1e-6)

    # z: the stack changes at once, the layers when the worker is done
    assert w.apply_z_text("0, 15, 45")
    assert list(stack.z) == [0.0, 15.0, 45.0] and layers[1].data[0, 0] == 20.0
    qtbot.waitUntil(lambda: not w.busy, timeout=20000)
    assert [float(lyr.data[:, 0].max()) for lyr in layers] == [0.0, 15.0, 45.0]
    np.testing.assert_allclose(layers[2].data[:, [2, 1]], stack[2].xy[shown[2]])

    # normalization: the values are recomputed in a worker, then swapped in
    assert w.apply_normalize("none")
    assert stack.normalize == "log1p" and not w.geometry.isEnabled()
    qtbot.waitUntil(lambda: not w.busy, timeout=30000)
    assert stack.normalize == "none" and w.geometry.isEnabled()
    raw = stack[0].adata.layers["values"]
    np.testing.assert_allclose(layers[0].features["g7"], raw[shown[0], g].toarray().ravel())
    np.testing.assert_allclose(stack[0].X, raw.toarray())

    assert on_ui and not any(on_ui)  # colours and values were all computed off the UI thread
    w.cleanup()
