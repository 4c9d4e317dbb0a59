"""The QC widget on the synthetic sample (analytic truth), with the real trainer at a small size."""

import numpy as np
import pytest

from napari_inrst.viewer.layers import stack_layer_data
from napari_inrst.synthetic.sample import sample_stack

from ..conftest import fast_fit


@pytest.fixture()
def qc_viewer(make_napari_viewer, qtbot):
    return _qc_viewer(make_napari_viewer, qtbot)


def _qc_viewer(make_napari_viewer, qtbot, show=False):
    from napari_inrst._qt.qc import QCWidget

    stack, tissue = sample_stack(misplace=False, n_genes=40, spot_spacing=80.0)
    for s in stack:  # an annotation: the tissue layer each spot lies in
        s.adata.obs["layer"] = tissue.programs(s.xyz)[:, :5].argmax(1).astype(str)
    viewer = make_napari_viewer(show=show)
    if show:
        viewer.window.resize(1000, 560)
    for data, kw, _ in stack_layer_data(stack):
        viewer.add_points(data, **kw)
    w = QCWidget(viewer)
    qtbot.addWidget(w)
    w.fit_fn = fast_fit
    return viewer, w, stack, tissue


def _wait(qtbot, w, timeout=60000):
    qtbot.waitUntil(lambda: w.worker is None, timeout=timeout)


def test_holdout_prediction_scores_near_analytic_truth(qc_viewer, qtbot):
    from napari_inrst.measure.metrics import pearson_per_gene

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
    assert not viewer.layers[s.name].visible  # its own layer would only clutter the measured panel
    assert viewer.layers["QC measured"].canvas_size_limits[0] >= 4  # dense cells stay visible zoomed out
    # clicking a gene in the table shows it
    row = next(r for r in range(w.table.rowCount()) if w.table.item(r, 0).text() == "LayerB")
    w._row_clicked(row, 0)
    assert viewer.layers["QC predicted"].metadata["gene"] == "LayerB"
    np.testing.assert_allclose(viewer.layers["QC measured"].features["value"], s.X[:, stack.gene_index("LayerB")])
    # 3D domains of the trained field as a Labels layer (computed in the background), ARI
    # against the annotation on the held-out section
    w.labels_box.setCurrentText("layer")
    w.n_domains.setValue(5)
    assert w.show_domains() is not None and w.worker is not None
    _wait(qtbot, w)
    dom = w.domains
    labels = viewer.layers["QC domains"]
    assert labels.data.max() >= 2 and labels.data.shape == dom.grid.shape and labels.data.ndim == 3
    assert dom.ari > 0.1, dom.ari  # chance level is 0
    assert "ARI" in w.status.text()
    # a legend: which colour is which domain (the Labels layer's own colours)
    from napari_inrst.render.display import labels_legend_html

    for k in np.unique(labels.data[labels.data > 0]):
        assert f"domain {k}" in w.status.text()
    assert labels_legend_html(labels, [1]) in w.status.text()
    # the panels are on top with their own colorbars (measured/predicted share one; residual)
    order = list(viewer.layers)
    assert order.index(viewer.layers["QC measured"]) > max(order.index(viewer.layers[x.name]) for x in stack)
    assert viewer.layers["QC measured"].face_colorbar.visible and viewer.layers["QC residual"].face_colorbar.visible
    # the results go with their stack
    viewer.layers.clear()
    assert w.stack is None and w.pred is None and w.model is None and w.table.rowCount() == 0
    assert not w.train_btn.isEnabled()


def _runs(mask):
    """(start, end) of the runs of True in a 1D boolean array."""
    m = np.concatenate([[False], mask, [False]]).astype(int)
    d = np.diff(m)
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def test_side_by_side_panels_are_separate_and_titled(make_napari_viewer, qtbot):
    """Measured | predicted | residual: three panels that do not overlap on screen, each titled,
    the residual on a diverging scale whose centre is dark (a right prediction stays quiet)."""
    viewer, w, stack, tissue = _qc_viewer(make_napari_viewer, qtbot, show=True)
    w.start_holdout(3)
    _wait(qtbot, w)
    for lyr in list(viewer.layers):  # only the QC panels on the canvas
        lyr.visible = lyr.name.startswith("QC")
    viewer.reset_view()
    qtbot.wait(100)
    img = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float)
    cols = img.sum(axis=(0, 2)) > 0
    panels = [r for r in _runs(cols) if r[1] - r[0] > 0.1 * img.shape[1]]
    assert len(panels) == 3, _runs(cols)
    titles = viewer.layers["QC titles"]
    labels = list(titles.features["label"])
    assert len(labels) == 3 and labels[0].startswith("measured") and labels[1].startswith("predicted")
    assert labels[2].startswith("residual") and titles.text.visible
    assert np.allclose(titles.data[:, 0], stack[3].z)
    # panel titles sit at each panel's left edge: x of measured, + shift, + 2 shift
    shift = viewer.layers["QC predicted"].translate[2]
    np.testing.assert_allclose(np.diff(titles.data[:, 2]), [shift, shift])
    assert shift > np.ptp(stack[3].xy[:, 0])  # the panels do not overlap in the world either
    res = viewer.layers["QC residual"]
    centre = res.face_colormap.map(np.array([0.5]))[0, :3]
    assert centre.max() < 0.35  # dark centre
    lo, hi = res.face_contrast_limits
    assert lo == pytest.approx(-hi)  # symmetric: 0 maps to the centre
    # another holdout: the panels move to its z, its own layer is hidden, the previous one is back
    from napari_inrst.measure.baselines import KNN3D

    assert not viewer.layers[stack[3].name].visible
    viewer.layers[stack[5].name].visible = True
    w.fit_fn = lambda st, secs: KNN3D(st, secs)
    w.start_holdout(5)
    _wait(qtbot, w)
    assert np.allclose(viewer.layers["QC measured"].data[:, 0], stack[5].z)
    assert viewer.layers[stack[3].name].visible and not viewer.layers[stack[5].name].visible


def test_section_strip_shows_gaps_flags_and_picks_the_holdout(qc_viewer, qtbot):
    from napari_inrst._qt.qc import STRIP_EXCLUDED, STRIP_FLAGGED, STRIP_SECTION

    viewer, w, stack, _ = qc_viewer
    w.strip.resize(600, 70)
    ov = w.strip.overview
    assert [g["width_um"] for g in ov["gaps"]] == [30, 30, 60, 30, 30, 60, 30]
    w.set_excluded(2)
    w.consistency = [{"index": i, "name": s.name, "score": 0.9, "z_score": 0.0, "rmse": 0.1,
                      "flagged": i == 5, "reason": "test" if i == 5 else ""} for i, s in enumerate(stack)]
    w.update_overview()
    img = w.strip.grab().toImage()

    def colour_at(i):
        x = int(round(w.strip._x(stack[i].z)))
        c = img.pixelColor(x, img.height() // 2)
        return (c.red(), c.green(), c.blue())

    def rgb(c):
        return (c.red(), c.green(), c.blue())

    assert colour_at(5) == rgb(STRIP_FLAGGED)
    assert colour_at(2) == rgb(STRIP_EXCLUDED)
    assert colour_at(0) == rgb(STRIP_SECTION)
    # a wide gap is shaded: between z 180 and 240 (sections 5 and 6) differs from a narrow gap's middle
    mid_wide = int(round(w.strip._x(210.0)))
    mid_narrow = int(round(w.strip._x(15.0)))
    assert img.pixelColor(mid_wide, img.height() // 2) != img.pixelColor(mid_narrow, img.height() // 2)
    # the text lists every gap's width (the excluded section does not close its gap) and the flag
    text = w.overview.toPlainText()
    assert text.count("| gap") == 6 and "WIDE gap 90 µm (≈2 sections missing)" in text and "⚠ test" in text
    # clicking a tick picks that section as the one to hold out
    w.strip.sectionClicked.emit(6)
    assert w.holdout_box.currentData() == 6
    assert w.strip.index_at(w.strip._x(stack[1].z) + 2) == 1 and w.strip.index_at(w.strip._x(15.0)) is None


def test_excluded_sections_stay_out_and_uncertainty_plane_and_volume(qc_viewer, qtbot):
    """Sections ticked as damaged are left out of training; the ensemble's uncertainty is shown
    like a gene – a plane at the current z and a volume – and is higher in the wide gap the
    excluded sections leave than at a measured section."""
    viewer, w, stack, _ = qc_viewer
    for i in (3, 4):  # z 120 and 150 damaged: a 120 µm gap from 60 to 180
        w.set_excluded(i)
    assert stack[3].excluded and stack[4].excluded and "excluded" in w.overview.toPlainText()
    assert "WIDE gap 120 µm" in w.overview.toPlainText()
    w.members.setValue(3)
    calls = []

    def recording_fit(st, secs, seed=0):
        calls.append((list(secs), seed))
        return fast_fit(st, secs, seed)

    w.fit_fn = recording_fit
    viewer.dims.set_point(0, 30.0)
    # an opaque field plane of the View widget already on screen (at the bottom, as View puts it)
    field_plane = viewer.add_image(np.ones((4, 4), np.float32), scale=(500.0, 500.0), name="f · field",
                                   metadata={"inrst_render": "plane"})
    viewer.layers.move(len(viewer.layers) - 1, 0)
    w.start_uncertainty()
    _wait(qtbot, w)
    assert len(w.ensemble.members) == 3
    # three members with different seeds, all trained without the excluded sections
    assert [c[0] for c in calls] == [[0, 1, 2, 5, 6, 7]] * 3 and len({c[1] for c in calls}) == 3
    vol_layer = viewer.layers["QC uncertainty"]
    vol = vol_layer.data
    assert vol.ndim == 3 and np.isfinite(vol).all() and vol.max() > 0 and not vol_layer.visible
    plane = viewer.layers["QC uncertainty · plane"]
    assert plane.visible and plane.data.ndim == 2 and plane.metadata["z_um"] == pytest.approx(30.0)
    assert tuple(vol_layer.axis_labels) == ("z", "y", "x") and tuple(plane.axis_labels) == ("y", "x")
    at_section = float(np.nanmean(plane.data))
    assert np.isnan(plane.data).any()  # outside tissue masked, like a gene
    order = list(viewer.layers)
    assert order.index(plane) > order.index(field_plane)  # the new result is not buried under the field
    assert plane.colorbar.visible and not field_plane.colorbar.visible  # its own colour scale
    viewer.dims.set_point(0, 120.0)  # the plane follows z (debounced, in the background)
    qtbot.waitUntil(lambda: plane.metadata["z_um"] == pytest.approx(120.0) and not w.planes.busy,
                    timeout=20000)
    in_gap = float(np.nanmean(plane.data))
    assert in_gap > 1.1 * at_section, (in_gap, at_section)
    # the volume agrees: its planes in the gap are above its planes at a measured section
    grid = vol_layer.metadata["grid"]
    zs = grid.z0 + grid.dz * np.arange(grid.nz)
    inside = vol_layer.metadata["inside"]
    assert inside.any() and not inside.all()  # masked outside tissue, like a gene
    prof = np.array([vol[k][inside[k]].mean() if inside[k].any() else np.nan for k in range(grid.nz)])
    assert np.nanmean(prof[(zs > 90) & (zs < 150)]) > np.nanmean(prof[zs < 40])
    # 3D display shows the volume instead of the plane
    viewer.dims.ndisplay = 3
    assert vol_layer.visible and not plane.visible
    viewer.dims.ndisplay = 2
    assert plane.visible and not vol_layer.visible
    # outside the tissue (unmasked): the field guesses most there
    n_calls = len(calls)
    w.inside_only.setChecked(False)
    _wait(qtbot, w)
    qtbot.waitUntil(lambda: not w.planes.busy, timeout=20000)
    assert len(calls) == n_calls  # re-rendered, not retrained
    full = viewer.layers["QC uncertainty · plane"].data
    assert np.isfinite(full).all()
    grid2 = viewer.layers["QC uncertainty · plane"].metadata["grid"]
    pts = grid2.points()
    occ = w.uncertainty_field.occupancy(pts).reshape(full.shape)
    assert full[occ < 0.05].mean() > full[occ > 0.95].mean()


def test_check_every_section_flags_the_distorted_one(qc_viewer, qtbot):
    from napari_inrst.measure.baselines import KNN3D
    from napari_inrst.synthetic.sample import rigid_matrix

    viewer, w, stack, tissue = qc_viewer
    stack[4].transform = rigid_matrix(25, center=tissue.center)  # a failed alignment
    w.fit_fn = lambda st, secs: KNN3D(st, secs)  # a quick stand-in field: the wiring is under test
    seen = []
    w.status.setText = lambda text, _set=w.status.setText: (seen.append(text), _set(text))
    w.progressMsg.disconnect()
    w.progressMsg.connect(w.status.setText)
    w.start_consistency()
    _wait(qtbot, w)
    per_section = [t for t in seen if t.startswith("checked ") and "/" in t]
    assert len(per_section) == len(stack) and per_section[-1].startswith(f"checked {len(stack)}/{len(stack)}")
    flagged = [r["name"] for r in w.consistency if r["flagged"]]
    assert flagged == [stack[4].name]
    assert stack[4].name in w.status.text()
    lines = [ln for ln in w.overview.toPlainText().splitlines() if "⚠" in ln]
    assert len(lines) == 1 and stack[4].name in lines[0]
