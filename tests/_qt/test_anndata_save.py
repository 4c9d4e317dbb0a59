""""Save virtual section…" (View field) and "Save to AnnData…" (QC) in real napari under Xvfb:
the files they write, read back with anndata, against the synthetic sample's analytic truth."""

import numpy as np
import pytest

from napari_inrst.field import TruthField
from napari_inrst.synthetic.sample import SyntheticTissue

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def test_view_widget_saves_the_virtual_section_at_its_z(make_napari_viewer, qtbot, tmp_path):
    import anndata as ad

    from napari_inrst._qt.anndata_save import start_save_virtual_section
    from napari_inrst._qt.view import ViewWidget

    tissue = SyntheticTissue(n_genes=12, depth=270.0, seed=0)
    viewer = make_napari_viewer()
    w = ViewWidget(viewer)
    qtbot.addWidget(w)
    assert w.save_vs_btn.text() == "Save virtual section…"
    assert start_save_virtual_section(w, tmp_path / "none.h5ad") is None  # no field yet: nothing written
    w.set_field(TruthField(tissue), genes=["LayerB"])
    qtbot.waitUntil(lambda: not w.busy, timeout=30000)
    w.set_z(95.0, sync=True)
    path = tmp_path / "virtual.h5ad"
    start_save_virtual_section(w, path, spacing=50.0)
    qtbot.waitUntil(path.exists, timeout=30000)
    v = ad.read_h5ad(path)
    xyz = np.column_stack([v.obsm["spatial"], v.obs["z"]])
    assert (v.obs["z"] == 95.0).all() and tissue.inside(xyz).all() and v.n_obs > 100
    np.testing.assert_allclose(np.asarray(v.X), tissue.truth(xyz), rtol=1e-5, atol=1e-6)
    assert not (tmp_path / "none.h5ad").exists()
    w.cleanup()


def test_qc_widget_saves_scores_and_flags_into_the_sections(make_napari_viewer, qtbot, tmp_path):
    import anndata as ad

    from napari_inrst._qt.anndata_save import start_save_qc
    from napari_inrst._qt.qc import QCWidget
    from napari_inrst.viewer.layers import stack_layer_data
    from napari_inrst.synthetic.sample import sample_stack

    stack, _ = sample_stack(misplace=False, n_genes=20, spot_spacing=100.0)
    viewer = make_napari_viewer()
    for data, kw, _ in stack_layer_data(stack):
        viewer.add_points(data, **kw)
    w = QCWidget(viewer)
    qtbot.addWidget(w)
    assert w.save_qc_btn.text() == "Save to AnnData…"
    assert start_save_qc(w, tmp_path / "none.h5ad") is None  # no results yet
    w.consistency = [{"index": i, "name": s.name, "z_um": s.z, "score": 0.9, "z_score": -4.0 if i == 3 else 0.2,
                      "rmse": 0.1, "rmse_rel": 0.5, "z_rmse": 0.0, "flagged": i == 3,
                      "reason": "test" if i == 3 else ""} for i, s in enumerate(w.stack)]
    path = tmp_path / "qc.h5ad"
    start_save_qc(w, path)
    qtbot.waitUntil(path.exists, timeout=30000)
    back = ad.read_h5ad(path)
    names = list(w.stack.names)
    assert list(back.obs["section"].cat.categories) == names
    flagged = back.obs.groupby("section", observed=True)["qc_flagged"].all()
    assert [n for n in names if flagged[n]] == [names[3]]
    z = back.obs.groupby("section", observed=True)["qc_z_score"].first()
    assert z[names[3]] == -4.0 and z[names[0]] == pytest.approx(0.2)
    assert list(back.uns["napari_inrst_qc"]["sections"]["flagged"]) == [i == 3 for i in range(len(names))]
