"""Measured sections in the View widget: coloured by the gene the View shows; large sections drawn
with level of detail (all cells in view when zoomed in, a capped subsample when zoomed out), with
colours computed once, transparent borders, and UI stalls bounded (stall meter)."""

import numpy as np
import pytest

from napari_inrst.viewer.layers import SECTION_KEY, stack_layer_data
from napari_inrst.render.sections import LOD_CAP, LOD_KEY, gene_contrast_sampled, point_rgba
from tests.stall import StallMeter


def _wait(qtbot, w, timeout=30000):
    qtbot.waitUntil(lambda: not w.busy, timeout=timeout)


def test_sections_follow_the_gene_shown_in_view(make_napari_viewer, qtbot, sample):
    from napari_inrst._qt.common import section_layers
    from napari_inrst._qt.view import ViewWidget
    from napari_inrst.field import TruthField
    from napari_inrst.synthetic.sample import SyntheticTissue

    stack, _ = sample
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(760, 480)
    for data, kw, _ in stack_layer_data(stack, gene="BlobA"):
        viewer.add_points(data, **kw)
    # finished results of other widgets: Train's preview (additive) and Align's overlay
    preview = viewer.add_image(np.ones((8, 8), np.float32), name="Field preview", blending="additive",
                               metadata={"inrst_preview": True}, scale=(300.0, 300.0))
    overlay = viewer.add_points(np.zeros((3, 2)), name="Align: sections overlaid", metadata={"inrst_overlay": True})
    w = ViewWidget(viewer)
    qtbot.addWidget(w)
    field = TruthField(SyntheticTissue(n_genes=12, depth=270.0, seed=0), ["LayerA", "LayerB"])
    w.set_field(field, genes=["LayerB"])
    _wait(qtbot, w)
    assert not preview.visible and not overlay.visible  # hidden once the field view appears
    overlay.visible = True
    w.set_z(w.z + 5.0)
    _wait(qtbot, w)
    assert overlay.visible  # …once: the user can show it again

    def check(gene):
        lo_hi = gene_contrast_sampled(stack, gene)
        for lyr in section_layers(viewer):
            s = stack[lyr.metadata[SECTION_KEY]]
            assert lyr.metadata["gene"] == gene
            want = point_rgba(s.X[:, stack.gene_index(gene)], lo_hi, w.colormaps[gene])
            np.testing.assert_allclose(lyr.face_color, want, atol=1e-6)
            assert (lyr.border_color[:, 3] == 0).all()  # no grey border haze

    check("LayerB")  # not the gene the sections were opened with
    w.gene.setCurrentText("LayerA")  # replaces the shown gene
    _wait(qtbot, w)
    check("LayerA")
    w.cleanup()


def _big_stack(n=60_000, n_genes=4, seed=0):
    import anndata as ad
    import pandas as pd

    from napari_inrst.stack import Section, SectionStack

    rng = np.random.default_rng(seed)
    xy = rng.random((n, 2)) * 6000.0
    X = np.column_stack([xy[:, 0] / 6000.0 + 0.1 * rng.random(n) for _ in range(n_genes)]).astype(np.float32)
    genes = [f"g{k}" for k in range(n_genes)]
    a = ad.AnnData(X=X, var=pd.DataFrame(index=pd.Index(genes)))
    a.obsm["spatial"] = xy
    a.uns["spot_diameter_um"] = 5.0
    return SectionStack([Section("big", a, 0.0)], genes)


def test_large_section_level_of_detail_and_no_long_stalls(make_napari_viewer, qtbot, capsys):
    from napari_inrst._qt.view import ViewWidget

    stack = _big_stack()
    s = stack[0]
    layers = stack_layer_data(stack)
    assert len(layers[0][0]) == LOD_CAP  # opened as a capped subsample, not 60,000 points
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(800, 600)
    (data, kw, _), = layers
    layer = viewer.add_points(data, **kw)
    assert (layer.border_color[:, 3] == 0).all()  # transparent border: no grey haze zoomed out
    w = ViewWidget(viewer)  # no field: level of detail still applies
    qtbot.addWidget(w)
    cam = viewer.scene.camera
    with StallMeter() as meter:
        cam.center = (0.0, 3000.0, 3000.0)
        cam.zoom = 2.0  # ~400 × 300 µm in view: a few hundred cells
        qtbot.wait(50)
        _wait(qtbot, w)
        idx = layer.metadata[LOD_KEY]["idx"]
        h, wd = viewer.canvas.size
        half_y, half_x = h / 2 / cam.zoom, wd / 2 / cam.zoom
        inside = (np.abs(s.xy[:, 0] - 3000) < half_x) & (np.abs(s.xy[:, 1] - 3000) < half_y)
        assert inside.sum() > 50 and np.isin(np.flatnonzero(inside), idx).all()  # full resolution in view
        assert len(layer.data) == len(idx) == LOD_CAP  # a layer of fixed size
        np.testing.assert_allclose(layer.data[:, [2, 1]], s.xy[idx])
        cam.zoom = 0.1  # everything in view: back to a capped subsample
        qtbot.wait(50)
        _wait(qtbot, w)
        assert len(layer.data) == LOD_CAP
    st = meter.summary()
    with capsys.disabled():
        print(f"\nlevel of detail, 60,000 cells, zoom in/out: {st}")
    assert st["max_ms"] < 3000  # generous (software GL, shared CI); benchmarks/bench_gui.py has the figure
    w.cleanup()


def test_field_plane_updates_do_not_reslice_the_section_layers(make_napari_viewer, qtbot, sample):
    """Panning and zooming re-evaluates the field plane; napari must not re-slice (re-send to the
    GPU) the section layers each time: the plane stays inside their extent, so napari's dims range
    and point do not move."""
    from napari_inrst._qt.common import section_layers
    from napari_inrst._qt.view import ViewWidget
    from napari_inrst.field import TruthField
    from napari_inrst.synthetic.sample import SyntheticTissue

    stack, _ = sample
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(760, 480)
    for data, kw, _ in stack_layer_data(stack, gene="LayerB"):
        viewer.add_points(data, **kw)
    w = ViewWidget(viewer)
    qtbot.addWidget(w)
    w.set_field(TruthField(SyntheticTissue(n_genes=12, depth=270.0, seed=0), ["LayerA", "LayerB"]), genes=["LayerB"])
    _wait(qtbot, w)
    plane = w.layers.plane["LayerB"]
    resliced, planes = [], []
    for lyr in section_layers(viewer):
        lyr.events.set_data.connect(lambda e, n=lyr.name: resliced.append(n))
    plane.events.data.connect(lambda e: planes.append(plane.data.shape))
    rng, point = viewer.dims.range, viewer.dims.point
    cam = viewer.scene.camera
    lo, hi = stack.bounds()
    for center, zoom in (((lo[1] + 100.0, lo[0] + 100.0), 4.0),  # far in at a corner: pixels < 1 µm
                         (((lo[1] + hi[1]) / 2, (lo[0] + hi[0]) / 2), 2.0), (None, 0.05)):  # middle; all
        if center is not None:
            cam.center = (cam.center[0], *center)
        cam.zoom = zoom
        qtbot.wait(50)
        _wait(qtbot, w)
    assert len(planes) >= 3  # the plane followed the view…
    assert resliced == [] and viewer.dims.range == rng and viewer.dims.point == point  # …alone
    w.cleanup()
