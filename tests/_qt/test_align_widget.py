"""The Align widget on the synthetic sample: layers move to the truth; manual correction is live."""

import numpy as np

from napari_inrst.viewer.layers import SECTION_KEY
from napari_inrst.stack import apply_transform


def _section_layers(viewer):
    return sorted([lyr for lyr in viewer.layers if SECTION_KEY in lyr.metadata],
                  key=lambda lyr: lyr.metadata[SECTION_KEY])


def test_align_widget_moves_layers_to_truth_and_corrects_by_hand(make_napari_viewer, qtbot):
    from napari_inrst._qt.align import OVERLAY_AFTER, OVERLAY_BEFORE, AlignWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-inrst", "synthetic")
    w = AlignWidget(viewer)
    qtbot.addWidget(w)
    stack = w.stack
    assert stack is not None and w.reference.currentIndex() == len(stack) // 2
    assert [w.reference.itemText(i) for i in range(w.reference.count())] == stack.names
    ref = 1  # not the default: the user picks the reference
    w.reference.setCurrentIndex(ref)
    w.show_before.setChecked(True)
    xy_before = np.concatenate([s.xy for s in stack])
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=180_000)
    assert w.result is not None, w.status.text()
    assert w.result.reference == ref
    assert w.progress.value() == w.progress.maximum()
    width = np.ptp(stack[len(stack) // 2].xy_input[:, 0])
    truth = [np.linalg.inv(stack[ref].adata.uns["truth_matrix"]) @ s.adata.uns["truth_matrix"] for s in stack]
    layers = _section_layers(viewer)
    assert len(layers) == len(stack)
    for lyr in layers:
        k = lyr.metadata[SECTION_KEY]
        s = stack[k]
        true_xy = apply_transform(truth[k], s.xy_input)  # in the frame of the chosen reference
        err = np.linalg.norm(lyr.data[:, [2, 1]] - true_xy, axis=1).mean()
        assert err < 0.02 * width, (s.name, err)
        np.testing.assert_allclose(lyr.data[:, 0], s.z)
    np.testing.assert_allclose(layers[ref].data[:, [2, 1]], stack[ref].xy_input)  # the reference stays put
    # the table reports the mirrored section and residuals in µm
    mirrored = [w.table.item(i, 2).text() == "yes" for i in range(len(stack))]
    assert mirrored == [bool(np.linalg.det(t[:2, :2]) < 0) for t in truth] and sum(mirrored) == 1
    assert all(float(w.table.item(i, 3).text()) < 30 for i in range(len(stack) - 1))
    # overlays: all sections, one colour each; "before" holds the positions before the run
    after = viewer.layers[OVERLAY_AFTER]
    assert len(after.data) == sum(s.n_obs for s in stack)
    assert len(np.unique(after.face_color.round(3), axis=0)) == len(stack)
    np.testing.assert_allclose(after.data[:, ::-1], np.concatenate([s.xy for s in stack]))
    before = viewer.layers[OVERLAY_BEFORE]
    assert before.visible
    np.testing.assert_allclose(before.data[:, ::-1], xy_before)
    # before ≠ after: the same sections in greyed tones, so the two overlays can be told apart
    assert len(np.unique(before.face_color.round(3), axis=0)) == len(stack)
    assert not np.isin(before.face_color.round(3), after.face_color.round(3)).all(axis=1).any()
    assert (after.border_color[:, 3] == 0).all()  # no grey border haze
    # µm on the overlays: no "Inconsistent units" with the µm section layers; the legend names them
    assert all(str(u) in ("µm", "micrometer") for u in (*after.units, *before.units))
    assert all(name in w.legend.text() for name in stack.names) and "greyed" in w.legend.text()
    w.show_before.setChecked(False)
    assert not before.visible

    # manual correction: rotate section 0 by 90° about its centroid, then flip, then reset
    w.section.setCurrentIndex(0)
    lyr = layers[0]
    before = lyr.data[:, [2, 1]].copy()
    c = before.mean(axis=0)
    w.angle.setValue(90.0)
    rot = (before - c) @ np.array([[0, -1], [1, 0]]).T + c
    np.testing.assert_allclose(lyr.data[:, [2, 1]], rot, atol=1e-6)
    np.testing.assert_allclose(stack[0].xy, rot, atol=1e-6)  # written into the stack
    np.testing.assert_allclose(after.data[: stack[0].n_obs, ::-1], rot, atol=1e-6)  # the overlay follows
    w.angle.setValue(0.0)
    w.flip.setChecked(True)
    w.dx.setValue(100.0)
    flipped = lyr.data[:, [2, 1]]
    np.testing.assert_allclose(flipped[:, 0], 2 * c[0] - before[:, 0] + 100.0, atol=1e-6)
    np.testing.assert_allclose(flipped[:, 1], before[:, 1], atol=1e-6)
    assert w.table.item(0, 2).text() == "yes"
    w.reset_section()
    np.testing.assert_allclose(lyr.data[:, [2, 1]], before, atol=1e-6)
    # undo: the reset, then the flip+shift (one step: quick changes of one section merge), then the 90°
    w.undo()
    np.testing.assert_allclose(lyr.data[:, [2, 1]], flipped, atol=1e-6)
    assert w.flip.isChecked() and w.dx.value() == 100.0
    while w.undo_button.isEnabled():
        w.undo()
    np.testing.assert_allclose(lyr.data[:, [2, 1]], before, atol=1e-6)
    assert w.angle.value() == 0.0 and not w.flip.isChecked()


def test_align_widget_cancel_leaves_sections_unchanged(make_napari_viewer, qtbot):
    from napari_inrst._qt.align import AlignWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-inrst", "synthetic")
    w = AlignWidget(viewer)
    qtbot.addWidget(w)
    before = [lyr.data.copy() for lyr in _section_layers(viewer)]
    transforms = w.stack.transforms()
    w.run()
    w.cancel()
    qtbot.waitUntil(lambda: w.worker is None, timeout=60_000)
    assert w.result is None and "cancel" in w.status.text()
    for lyr, b in zip(_section_layers(viewer), before):
        np.testing.assert_array_equal(lyr.data, b)
    for s, t in zip(w.stack.sections, transforms):
        np.testing.assert_array_equal(s.transform, t)
    assert w.run_button.isEnabled()
