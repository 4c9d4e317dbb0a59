"""Opening several files gives one stack; what was assumed is said and can be set (Sections);
a field handed over reaches the View widget at once; a typed z beyond the stack stays."""

import numpy as np
import pytest

from napari_inrst.viewer.layers import SECTION_KEY, STACK_KEY


@pytest.fixture()
def files(tmp_path, make_section):
    """Three small count sections without a z, as .h5ad files."""
    out = []
    for k in range(3):
        a = make_section(n=40, genes=("A", "B", "C", "D", "E"), seed=k)
        a.obsm["spatial"] = a.obsm["spatial"] * 0.01  # 0–5 units: array-like coordinates
        p = tmp_path / f"s{k + 1}.h5ad"
        a.write_h5ad(p)
        out.append(str(p))
    return out


@pytest.mark.parametrize("as_stack", [False, True])
def test_open_several_files_gives_one_stack_and_says_what_was_assumed(make_napari_viewer, qtbot, files, as_stack):
    from napari_inrst._qt.sections import SectionsWidget

    viewer = make_napari_viewer()
    viewer.open(files, plugin="napari-inrst", stack=as_stack)  # napari: one reader call per file unless stack
    stacks = {id(lyr.metadata[STACK_KEY]) for lyr in viewer.layers}
    assert len(viewer.layers) == 3 and len(stacks) == 1
    stack = viewer.layers[0].metadata[STACK_KEY]
    assert [lyr.metadata[SECTION_KEY] for lyr in viewer.layers] == [0, 1, 2]
    assert sorted(float(lyr.data[0, 0]) for lyr in viewer.layers) == [0.0, 10.0, 20.0]
    assert tuple(viewer.dims.axis_labels) == ("z", "y", "x")
    w = SectionsWidget(viewer)
    qtbot.addWidget(w)
    text = w.summary.toPlainText()
    assert text.startswith("3 sections") and "z assumed: 10 µm apart" in text and "unit factor" in text
    assert stack.report["z_assumed"]["sections"] == ["s1", "s2", "s3"]


def test_sections_widget_sets_z_units_and_normalization(make_napari_viewer, qtbot, files):
    from napari_inrst._qt.sections import SectionsWidget

    viewer = make_napari_viewer()
    viewer.open(files, plugin="napari-inrst")
    w = SectionsWidget(viewer)
    qtbot.addWidget(w)
    stack = w.stack
    layer = viewer.layers[1]
    xy0 = layer.data[:, 1:].copy()
    assert w.apply_z_text("0, 12.5, 40")
    qtbot.waitUntil(lambda: not w.busy, timeout=10000)  # the layers move in a worker
    assert list(stack.z) == [0.0, 12.5, 40.0] and np.all(layer.data[:, 0] == 12.5)
    assert "z assumed" not in w.summary.toPlainText()
    assert not w.apply_z_text("0, 5, 5") and "share a z" in w.message.text()
    assert list(stack.z) == [0.0, 12.5, 40.0]  # nothing changed
    assert w.apply_unit_factor(100.0)
    qtbot.waitUntil(lambda: not w.busy, timeout=10000)
    np.testing.assert_allclose(layer.data[:, 1:], xy0 * 100.0)
    assert "coordinates × 100 → µm" in w.summary.toPlainText()
    before = stack[0].X.copy()
    assert w.apply_normalize("none")  # started in a worker
    qtbot.waitUntil(lambda: not w.busy, timeout=10000)
    assert stack.normalize == "none" and w.normalize.currentText() == "none"
    raw = stack[0].adata.layers["values"]  # values as given (raw counts here)
    np.testing.assert_allclose(stack[0].X, np.asarray(raw.todense() if hasattr(raw, "todense") else raw))
    assert w.apply_normalize("log1p")
    qtbot.waitUntil(lambda: not w.busy, timeout=10000)
    np.testing.assert_allclose(stack[0].X, before, rtol=1e-5)


def test_view_gets_a_published_field_at_once_and_keeps_a_typed_z(make_napari_viewer, qtbot, sample):
    from napari_inrst._qt.view import ViewWidget
    from napari_inrst.field import TruthField
    from napari_inrst.viewer.layers import stack_layer_data
    from napari_inrst.viewer.session import publish_field

    stack, tissue = sample
    viewer = make_napari_viewer()
    viewer.window.resize(640, 420)  # a small canvas: small planes to render
    for data, kw, _ in stack_layer_data(stack):
        viewer.add_points(data, **kw)
    w = ViewWidget(viewer)
    qtbot.addWidget(w)
    assert w.field is None
    field = TruthField(tissue, ["LayerA", "LayerB"])
    publish_field(viewer, field, "test")  # no layer added or removed
    assert w.field is field
    top = float(max(stack.z))
    w.set_z(top + 60.0)  # beyond the last section: napari's slider cannot follow
    viewer.add_image(np.zeros((4, 4), np.float32), name="unrelated", units="µm")  # dims events, z unchanged
    viewer.dims.set_point(1, 1.0)
    assert w.z == pytest.approx(top + 60.0)
    viewer.dims.set_point(0, float(stack.z[1]))  # the user moves napari's own z slider
    assert w.z == pytest.approx(float(stack.z[1]))
    w.cleanup()


@pytest.mark.parametrize("as_stack", [False, True])
def test_large_files_are_read_in_the_background_into_one_stack(make_napari_viewer, qtbot, files, monkeypatch, as_stack):
    """File ▸ Open of large section files returns at once (nothing read on the UI thread); the
    layers arrive from a worker, all files in ONE stack; a file opened later joins it."""
    from napari_inrst._qt import opener
    from napari_inrst.viewer import hooks

    monkeypatch.setattr(opener, "ASYNC_BYTES", 1)  # these small files count as large
    read_on_ui = []
    monkeypatch.setattr(hooks, "read_sections_layers", lambda *a, **k: read_on_ui.append(a) or [(None,)])
    viewer = make_napari_viewer()
    viewer.open(files[:2], plugin="napari-inrst", stack=as_stack)
    assert len(viewer.layers) == 0 and not read_on_ui  # returned before anything was read
    op = opener.opener_of(viewer, create=False)
    assert op is not None and op.busy
    qtbot.waitUntil(lambda: not op.busy and len(viewer.layers) == 2, timeout=30000)
    stack = viewer.layers[0].metadata[STACK_KEY]
    assert {id(lyr.metadata[STACK_KEY]) for lyr in viewer.layers} == {id(stack)} and stack.names == ["s1", "s2"]
    assert stack.report["z_assumed"]["sections"] == ["s1", "s2"]
    viewer.open(files[2], plugin="napari-inrst")  # a later File ▸ Open joins the open stack
    op = opener.opener_of(viewer, create=False)
    assert op is not None and op.busy
    qtbot.waitUntil(lambda: not op.busy and len(viewer.layers) == 3, timeout=30000)
    qtbot.waitUntil(lambda: id(viewer) not in opener._OPENERS, timeout=5000)  # idle: the viewer is let go
    joined = viewer.layers[-1].metadata[STACK_KEY]
    assert joined.names == ["s1", "s2", "s3"] and all(lyr.metadata[STACK_KEY] is joined for lyr in viewer.layers)
    assert sorted(lyr.metadata[SECTION_KEY] for lyr in viewer.layers) == [0, 1, 2] and not read_on_ui
