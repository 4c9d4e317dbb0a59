"""The QC widget on the synthetic sample (analytic truth), with the real trainer at a small size."""

import numpy as np
import pytest

from napari_inrst.layers import stack_layer_data
from napari_inrst.sample import sample_stack

from ..test_qc import fast_fit


@pytest.fixture()
def qc_viewer(make_napari_viewer, qtbot):
    from napari_inrst._qt.qc import QCWidget

    stack, tissue = sample_stack(misplace=False, n_genes=40, spot_spacing=80.0)
    for s in stack:  # an annotation: the tissue layer each spot lies in
        s.adata.obs["layer"] = tissue.programs(s.xyz)[:, :5].argmax(1).astype(str)
    viewer = make_napari_viewer()
    for data, kw, _ in stack_layer_data(stack):
        viewer.add_points(data, **kw)
    w = QCWidget(viewer)
    qtbot.addWidget(w)
    w.fit_fn = fast_fit
    return viewer, w, stack, tissue


def _wait(qtbot, w, timeout=60000):
    qtbot.waitUntil(lambda: w.worker is None, timeout=timeout)


def test_holdout_prediction_scores_near_analytic_truth(qc_viewer, qtbot):
    from napari_inrst.evaluate.metrics import pearson_per_gene

    viewer, w, stack, tissue = qc_viewer
    assert w.stack is stack and w.holdout_box.count() == 8 and w.gene.count() == 40
    h = 3
    w.start_holdout(h)
    assert w.worker is not None  # runs in the background
    _wait(qtbot, w)
    s = stack[h]
    truth = tissue.truth(s.xyz, stack.genes)
    # the table: one row per gene, sortable, Pearson of the held-out section
    rows = w.table_rows()
    assert len(rows) == 40 and [r["pearson"] for r in rows] == sorted([r["pearson"] for r in rows], reverse=True)
    mean_r = np.mean([r["pearson"] for r in rows])
    ideal = pearson_per_gene(s.X, truth)  # the best any field can do against the noisy counts
    assert ideal - 0.12 < mean_r <= ideal + 0.02, (mean_r, ideal)
    assert pearson_per_gene(truth, w.pred) > 0.85  # close to the analytic truth itself
    # side by side at that z: measured, predicted, residual
    for name in ("QC measured", "QC predicted", "QC residual"):
        layer = viewer.layers[name]
        assert np.allclose(layer.data[:, 0], s.z) and len(layer.data) == s.n_obs
    assert viewer.layers["QC predicted"].translate[2] > 0 and viewer.layers["QC residual"].translate[2] > viewer.layers["QC predicted"].translate[2]
    g = stack.gene_index(viewer.layers["QC measured"].metadata["gene"])
    np.testing.assert_allclose(viewer.layers["QC residual"].features["value"], w.pred[:, g] - s.X[:, g], atol=1e-5)
    assert viewer.dims.point[0] == pytest.approx(s.z)
    # clicking a gene in the table shows it
    row = next(r for r in range(w.table.rowCount()) if w.table.item(r, 0).text() == "LayerB")
    w._row_clicked(row, 0)
    assert viewer.layers["QC predicted"].metadata["gene"] == "LayerB"
    np.testing.assert_allclose(viewer.layers["QC measured"].features["value"], s.X[:, stack.gene_index("LayerB")])
    # 3D domains of the trained field as a Labels layer, ARI against the annotation
    w.labels_box.setCurrentText("layer")
    w.n_domains.setValue(5)
    dom = w.show_domains()
    labels = viewer.layers["QC domains"]
    assert labels.data.max() >= 2 and labels.data.shape == dom.grid.shape
    assert dom.ari > 0.1, dom.ari  # chance level is 0
    assert "ARI" in w.status.text()


def test_excluded_sections_stay_out_and_uncertainty_layer(qc_viewer, qtbot):
    viewer, w, stack, _ = qc_viewer
    w.set_excluded(1)
    assert stack[1].excluded and "excluded" in w.overview.toPlainText()
    w.members.setValue(2)
    calls = []

    def recording_fit(st, secs, seed=0):
        calls.append((list(secs), seed))
        return fast_fit(st, secs, seed)

    w.fit_fn = recording_fit
    w.start_uncertainty()
    _wait(qtbot, w)
    vol = viewer.layers["QC uncertainty"].data
    assert vol.ndim == 3 and np.isfinite(vol).all() and vol.max() > 0
    assert len(w.ensemble.members) == 2
    # two members with different seeds, both trained without the excluded section
    assert [c[0] for c in calls] == [[0, 2, 3, 4, 5, 6, 7]] * 2 and calls[0][1] != calls[1][1]


def test_check_every_section_flags_the_distorted_one(qc_viewer, qtbot):
    from napari_inrst.evaluate.baselines import KNN3D
    from napari_inrst.sample import rigid_matrix

    viewer, w, stack, tissue = qc_viewer
    stack[4].transform = rigid_matrix(25, center=tissue.center)  # a failed alignment
    w.fit_fn = lambda st, secs: KNN3D(st, secs)  # a quick stand-in field: the wiring is under test
    w.start_consistency()
    _wait(qtbot, w)
    flagged = [r["name"] for r in w.consistency if r["flagged"]]
    assert flagged == [stack[4].name]
    assert stack[4].name in w.status.text()
    lines = [ln for ln in w.overview.toPlainText().splitlines() if "⚠" in ln]
    assert len(lines) == 1 and stack[4].name in lines[0]
