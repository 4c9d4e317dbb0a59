"""The View widget's Qt-free parts: its view model (genes, colours, z, sampling, the requests it
derives), the generator jobs against the analytic truth, and its layers in a Qt-free napari
``ViewerModel``. No QApplication here."""

import subprocess
import sys

import numpy as np
import pytest

from napari_inrst.errors import InputError
from napari_inrst.field import TruthField
from napari_inrst.render.resample import OVERSAMPLE
from napari_inrst.synthetic.sample import SyntheticTissue
from napari_inrst.viewer.view_state import COLORMAP_CYCLE, FIRST_COLORMAP, ViewState

GENES = ["LayerA", "LayerB", "LayerC", "BlobA", "Boundary"]


@pytest.fixture(scope="module")
def field():
    return TruthField(SyntheticTissue(n_genes=12, depth=270.0, seed=0), GENES)


def _record(state):
    log = []
    for name in ("field_changed", "genes_changed", "colormap_changed", "z_changed", "sampling_changed",
                 "contrast_changed"):
        getattr(state, name).connect(lambda *a, n=name: log.append((n, *a)))
    return log


def test_view_model_is_importable_without_qt():
    code = ("import sys, napari_inrst.viewer.view_state, napari_inrst.viewer.view_jobs, "
            "napari_inrst.viewer.field_layers; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_field_genes_colours_and_events(field):
    state = ViewState()
    log = _record(state)
    state.set_field(field, z=1e6, default_gene="LayerC")
    assert state.genes == ["LayerC"] and log == [("field_changed", field)]
    lo, hi = state.z_range
    assert lo == pytest.approx(-67.5) and hi == pytest.approx(337.5) and state.z == hi  # z clipped to the range
    assert state.colormaps["LayerC"] == FIRST_COLORMAP
    log.clear()
    assert state.add_gene("BlobA") and not state.add_gene("BlobA")
    (name, change), = log
    assert name == "genes_changed" and change.added == ("BlobA",) and change.new == ("LayerC", "BlobA")
    assert state.colormaps["BlobA"] == COLORMAP_CYCLE[0]
    with pytest.raises(InputError, match="Nope"):
        state.add_gene("Nope")
    # picking a gene replaces the selected one, keeping its colour and place
    log.clear()
    assert state.pick_gene("LayerA", selected="BlobA")
    assert state.genes == ["LayerC", "LayerA"] and state.colormaps["LayerA"] == COLORMAP_CYCLE[0]
    assert log[0][1].replaced == (("BlobA", "LayerA"),)
    assert not state.pick_gene("LayerA") and not state.pick_gene("Nope")
    state.set_colormap("LayerA", "gray")
    assert log[-1] == ("colormap_changed", "LayerA", "gray")
    assert state.remove_gene("LayerC") and state.genes == ["LayerA"]
    state.set_genes(["Boundary", "LayerA"])
    assert state.genes == ["Boundary", "LayerA"] and log[-1][1].added == ("Boundary",)
    # a new field: genes and contrast reset, colours kept per gene name
    state.contrast["LayerA"] = (0.0, 1.0)
    state.set_field(field, genes=["LayerA"], z=50.0)
    assert state.genes == ["LayerA"] and state.contrast == {} and state.z == 50.0
    assert state.colormaps["LayerA"] == "gray"
    with pytest.raises(InputError):
        state.set_field(field, genes=["Nope"])


def test_z_sampling_and_contrast_bookkeeping(field):
    state = ViewState()
    log = _record(state)
    state.set_field(field, genes=["LayerB"], z=40.0)
    log.clear()
    assert not state.set_z(40.0) and state.set_z(45.5) and log == [("z_changed", 45.5)]
    assert state.set_z(45.5, force=True)
    assert state.nearest_section([0.0, 30.0, 60.0]) == 60.0 and state.nearest_section([]) is None
    assert state.oversample == OVERSAMPLE
    state.set_band_limited(False)
    assert state.oversample is None and log[-1] == ("sampling_changed", None)
    # limits from a worker count only for the field they were computed for, and never override
    state.add_contrast(object(), {"LayerB": (0.0, 1.0)})
    assert state.contrast == {}
    state.add_contrast(field, {"LayerB": (0.0, 2.0)})
    state.add_contrast(field, {"LayerB": (5.0, 6.0)})
    assert state.contrast == {"LayerB": (0.0, 2.0)}
    state.reset_contrast()  # Auto contrast: percentiles of the field in tissue
    lo, hi = state.contrast["LayerB"]
    assert 0.0 <= lo < hi and (lo, hi) != (0.0, 2.0)


def test_plane_request_and_job_give_the_truth(field):
    from napari_inrst.viewer.view_jobs import plane_job

    state = ViewState()
    state.set_field(field, genes=["LayerB", "BlobA"], z=100.0)
    req = state.plane_request((750.0, 1000.0), 0.25, (300, 400))  # whole tissue in a 300 × 400 canvas
    assert req.genes == ("LayerB", "BlobA") and req.idx == (1, 3) and {g for g, _ in req.missing} == set(req.genes)
    assert req.grid.z == 100.0 and 2 <= req.grid.dx <= 4  # screen resolution: ~1 sample per canvas pixel
    results = [item for item in plane_job(req, state.cache) if isinstance(item, tuple)]  # floats: progress
    tags = [r[0] for r in results]
    assert tags[0] == "contrast" and tags[-1] == "plane" and results[-1][4]  # the fine plane comes last
    _, grid, genes, vals, _ = results[-1]
    xyz = grid.points().astype(np.float64)
    tissue = field.tissue
    inside = tissue.inside(xyz).reshape(vals.shape[1:])
    truth = tissue.truth(xyz, list(genes)).T.reshape(vals.shape)
    assert 0.1 < inside.mean() < 0.95 and np.isnan(vals[:, ~inside]).all()
    np.testing.assert_allclose(vals[:, inside], truth[:, inside], rtol=1e-5, atol=1e-5)
    state.add_contrast(field, results[0][2])
    state.plane_shown(grid, genes)
    assert state.plane_request((750.0, 1000.0), 0.25, (300, 400)) is None  # already on screen
    state.set_z(120.0)
    again = state.plane_request((750.0, 1000.0), 0.25, (300, 400))
    assert again is not None and again.missing == () and again.grid.z == 120.0
    state.set_ndisplay(3)
    assert state.plane_request((750.0, 1000.0), 0.25, (300, 400)) is None  # 3D: volumes, not planes
    vreq = state.volume_request()
    assert max(vreq.grid.shape) == state.resolution and vreq.genes == ("LayerB", "BlobA")


def test_field_layers_follow_the_state_in_a_qt_free_viewer(field):
    from napari.components import ViewerModel

    from napari_inrst.viewer.field_layers import FieldLayers
    from napari_inrst.viewer.view_jobs import plane_job, volume_job

    viewer = ViewerModel()
    other = viewer.add_points(np.zeros((2, 2)), name="sections")
    state = ViewState()
    state.set_field(field, genes=["LayerB", "BlobA"], z=100.0)
    layers = FieldLayers(viewer, state)
    req = state.plane_request((750.0, 1000.0), 0.125, (150, 200))
    *_, (_, grid, genes, vals, fine) = [r for r in plane_job(req) if isinstance(r, tuple)]
    assert layers.show_plane(grid, genes, vals, fine=fine)
    a, b = layers.plane["LayerB"], layers.plane["BlobA"]
    assert list(viewer.layers)[-1] is other  # field planes under the sections
    blend = sorted((list(viewer.layers).index(lyr), str(lyr.blending)) for lyr in (a, b))
    assert [m for _, m in blend] == ["translucent_no_depth", "additive"]  # NaN stays see-through
    assert a.colormap.name == FIRST_COLORMAP and a.metadata["z_um"] == 100.0 and str(a.units[0]) == "micrometer"
    assert tuple(a.contrast_limits) == pytest.approx(state.contrast["LayerB"])
    # replacing a gene reuses its layer; removing one removes its layer
    state.genes_changed.connect(layers.apply_genes)
    state.replace_gene("BlobA", "LayerA")
    assert layers.plane["LayerA"] is b and b.name == "LayerA · field" and b.metadata["gene"] == "LayerA"
    state.remove_gene("LayerB")
    assert a not in viewer.layers and list(layers.plane) == ["LayerA"]
    # volumes: NaN outside tissue is filled for ray casting and restored when saved
    state.set_resolution(24)
    vreq = state.volume_request()
    viewer.dims.ndisplay = 3
    state.set_ndisplay(3)
    *_, (_, vgrid, vgenes, vvals, key) = [r for r in volume_job(vreq) if isinstance(r, tuple)]
    assert layers.volume_todo(state.volume_key(vgrid)) == ["LayerA"]
    layers.show_volume(vgrid, vgenes, vvals, key)
    vol = layers.volume["LayerA"]
    assert np.isfinite(vol.data).all() and vol.visible and layers.shown() == [vol]
    assert layers.volume_todo(state.volume_key(vgrid)) == []
    saved, sgrid, sgenes = layers.volume_values()
    np.testing.assert_array_equal(np.isnan(saved), np.isnan(vvals))
    assert sgrid == vgrid and sgenes == ["LayerA"]
    layers.clear()
    assert list(viewer.layers) == [other]
