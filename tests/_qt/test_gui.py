"""The real GUI under Xvfb (OpenGL through Mesa): reader, layers, widgets, screenshots."""

import numpy as np
import pytest

from napari_inrst.viewer.layers import SECTION_KEY, STACK_KEY

from ..conftest import BREAST


def _points(viewer):
    return [lyr for lyr in viewer.layers if lyr._type_string == "points"]


def test_open_breast_st_folder_through_reader(make_napari_viewer, breast_dir):
    viewer = make_napari_viewer()
    layers = viewer.open(str(breast_dir), plugin="napari-inrst")
    assert [lyr.name for lyr in layers] == ["section1", "section2", "section3", "section4"]
    stack = layers[0].metadata[STACK_KEY]
    assert all(lyr.metadata[STACK_KEY] is stack for lyr in layers)
    zs = [np.unique(lyr.data[:, 0]) for lyr in layers]
    assert all(len(z) == 1 for z in zs) and len({float(z[0]) for z in zs}) == 4  # one z per section
    for lyr in layers:
        s = stack[lyr.metadata[SECTION_KEY]]
        assert len(lyr.data) == s.n_obs
        np.testing.assert_allclose(lyr.data[:, 2], s.xy[:, 0])  # world axes (z, y, x)
        gene = lyr.metadata["gene"]
        np.testing.assert_allclose(lyr.features[gene], s.X[:, stack.gene_index(gene)])
        assert np.allclose(lyr.size, s.spot_diameter_um())
    # coloured by the gene: more than one distinct face colour
    assert len(np.unique(layers[0].face_color.round(3), axis=0)) > 5


def test_open_merfish_folder_through_reader(make_napari_viewer, merfish_dir):
    viewer = make_napari_viewer()
    layers = viewer.open(str(merfish_dir), plugin="napari-inrst")
    assert len(layers) == 5 and sum(len(lyr.data) for lyr in layers) > 27000
    stack = layers[0].metadata[STACK_KEY]
    assert stack.normalize == "none"  # volume-normalized values are not counts
    assert stack.n_genes == 155


def test_screenshot_of_sample_is_not_blank(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-inrst", "synthetic")
    layers = _points(viewer)
    assert len(layers) == 8
    viewer.dims.set_point(0, layers[2].metadata["z_um"])  # 2D view at a measured section
    viewer.reset_view()
    img = viewer.screenshot(canvas_only=True, flash=False)
    assert img.ndim == 3 and img.shape[0] > 100
    rgb = img[..., :3].astype(float)
    assert rgb.std() > 10  # not a flat image
    assert (rgb.sum(-1) > 60).mean() > 0.05  # a good share of the canvas is painted


def test_sections_widget_recolours_by_searched_gene(make_napari_viewer, qtbot):
    from napari_inrst._qt.sections import SectionsWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-inrst", "synthetic")
    w = SectionsWidget(viewer)
    qtbot.addWidget(w)
    assert w.stack is not None and w.gene.count() == 300
    assert w.gene.search("layer")[:5] == ["LayerA", "LayerB", "LayerC", "LayerD", "LayerE"]
    assert w.gene.search("oundar") == ["Boundary"]
    layer = _points(viewer)[0]
    before = layer.face_color.copy()
    w.gene.setCurrentText("BlobA")  # recoloured in a worker; the layer is swapped in on the UI thread
    qtbot.waitUntil(lambda: layer.metadata.get("gene") == "BlobA", timeout=20000)
    assert "BlobA" in layer.features
    assert not np.allclose(before, layer.face_color)
    w.size.setValue(2.0)
    s = w.stack[layer.metadata[SECTION_KEY]]
    assert np.allclose(layer.size, 2 * s.spot_diameter_um())


def test_bad_file_gives_a_notification_naming_it(make_napari_viewer, tmp_path):
    from napari.utils.notifications import notification_manager

    bad = tmp_path / "broken.h5ad"
    bad.write_bytes(b"garbage" * 50)
    seen = []
    notification_manager.notification_ready.connect(lambda n: seen.append(str(n.message)))
    viewer = make_napari_viewer()
    viewer.open(str(bad), plugin="napari-inrst")
    assert len(viewer.layers) == 0
    assert any("broken.h5ad" in m and "not a readable AnnData" in m for m in seen)


def test_demo_loads_sample_and_docks_widgets(make_napari_viewer, qtbot):
    from napari_inrst.cli.demo import DEMO_ANGLES, WIDGETS, open_demo

    viewer = make_napari_viewer(show=True)
    open_demo(viewer=viewer)
    qtbot.wait(100)
    h, w = viewer.canvas.size
    assert w >= 700 and h >= 600, (h, w)  # the tabbed dock does not squeeze the canvas (1600 × 1000 screen; was 340 px wide)
    assert tuple(viewer.scene.camera.angles) == pytest.approx(DEMO_ANGLES)  # slanted: the stack is not flat
    assert len(_points(viewer)) == 8
    docked = " ".join(viewer.window.dock_widgets.keys())
    for name in WIDGETS:
        assert name in docked
    assert viewer.dims.ndisplay == 3
