"""The Align widget's non-rigid option (issue 14, "See it"): the real widget runs "Non-rigid
(deform)" on a small synthetic stack, keeps each section's deformation on the stack, draws the
selected section's warped grid (Shapes, µm) and |d| map (Image, µm, colorbar) — a known warp
displaces the grid by the known amount —, and a section's deformation is switched off and undone."""

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_inrst.align.kabsch import rigid_matrix
from napari_inrst.stack import apply_transform
from napari_inrst.viewer.layers import stack_layer_data
from tests.viewer.test_deform_view import _grid_for, _result, _warp_of


def _um(layer):
    return all(str(u) in ("µm", "micrometer") for u in layer.units)


def test_align_widget_nonrigid_grid_magnitude_and_switch_off(make_napari_viewer, qtbot):
    from napari_inrst._qt.align import OVERLAY_AFTER, AlignWidget
    from napari_inrst._qt.align_deform import GRID_LAYER, MAGNITUDE_LAYER
    from napari_inrst.synthetic.sample import sample_stack
    from napari_inrst.viewer.deform_view import (
        MAGNITUDE_LABEL,
        cell_magnitudes,
        grid_lines,
    )

    stack, _ = sample_stack(n_sections=4, missing=(), n_genes=12, spot_spacing=150.0)
    viewer = make_napari_viewer()
    for data, kw, _ in stack_layer_data(stack):
        viewer.add_points(data, **kw)
    w = AlignWidget(viewer)
    qtbot.addWidget(w)
    w.method.setCurrentIndex(w.method.findData("nonrigid"))
    assert w.method.currentText() == "Non-rigid (deform)"
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert w.result is not None and w.result.method == "nonrigid", w.status.text()
    assert w.progress.value() == w.progress.maximum() and "cancel" not in w.status.text()
    ref = w.result.reference
    # each section but the reference keeps its deformation on the stack (what Train / the model use)
    for i, s in enumerate(stack.sections):
        assert (s.deformation is None) == (i == ref)
    panel = w.deform
    assert panel.list.count() == len(stack) and "rigid only" in panel.list.item(ref).text()
    k = panel.selected
    assert k != ref and k >= 0
    s, d = stack[k], stack[k].deformation
    grid, mag = viewer.layers[GRID_LAYER], viewer.layers[MAGNITUDE_LAYER]
    assert grid.visible and mag.visible and _um(grid) and _um(mag)
    assert set(grid.shape_type) == {"path"} and mag.colorbar.visible and MAGNITUDE_LABEL in mag.name
    assert viewer.layers.extent.units is not None  # one unit across the layers: napari does not warn
    # the grid is displaced from the straight (rigid) grid by the deformation, µm in (y, x)
    M = s.transform
    assert len(grid.data) == len(grid_lines(d))
    for path, line in zip(grid.data, grid_lines(d)):
        np.testing.assert_allclose(path[:, ::-1] - apply_transform(M, line), d.displacement(line) @ M[:2, :2].T,
                                   atol=1e-3)  # (napari keeps shapes in float32)
    assert np.nanmax(mag.data) == pytest.approx(cell_magnitudes(s, d).max(), rel=0.03)
    assert MAGNITUDE_LABEL in panel.legend.text()
    # "after" overlay: the sections as kept, deformation included
    after = viewer.layers[OVERLAY_AFTER]
    np.testing.assert_allclose(after.data[:, ::-1], np.concatenate([x.xy for x in stack]))

    # switch it off (the user unticks it): dropped from the stack, overlay and layers follow; undo
    with_def = s.xy.copy()
    panel.set_kept(k, False)
    assert s.deformation is None and not grid.visible and not mag.visible
    rigid = apply_transform(M, s.xy_input)
    off = sum(x.n_obs for x in stack.sections[:k])
    np.testing.assert_allclose(after.data[off:off + s.n_obs, ::-1], rigid)
    assert w.undo_button.isEnabled()
    w.undo()
    assert s.deformation is d and grid.visible
    np.testing.assert_allclose(after.data[off:off + s.n_obs, ::-1], with_def)
    assert panel.list.item(k).checkState() == Qt.CheckState.Checked  # the list follows the undo

    # a known warp (a result carrying it): the grid shows exactly that displacement, rotated by M
    amp = 40.0
    warp = _warp_of(stack[0], amp)
    known = _grid_for(stack[0], warp)
    mats = [np.eye(3) for _ in stack]
    mats[0] = rigid_matrix(30.0, (200.0, 50.0), center=stack[0].xy_input.mean(axis=0))
    w.apply_result(_result(stack, [known] + [None] * (len(stack) - 1), mats))
    panel.select(0)
    assert grid.visible
    errs = []
    for path, line in zip(grid.data, grid_lines(known)):
        moved = path[:, ::-1] - apply_transform(mats[0], line)
        errs.append(np.linalg.norm(moved - warp(line) @ mats[0][:2, :2].T, axis=1))
    errs = np.concatenate(errs)
    assert errs.mean() < 0.06 * amp and errs.max() < 0.2 * amp
    assert np.nanmax(mag.data) == pytest.approx(cell_magnitudes(stack[0], known).max(), rel=0.03)
