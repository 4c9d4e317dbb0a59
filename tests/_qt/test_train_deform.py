"""Train widget's "deform sections" (as ``fit --deform``, in the training process) and the View
widget's measured sections where the field puts them (issue 14): a small synthetic stack; the field
is then given a known deformation and refined transform of one section, and the View must draw that
section's cells there."""

import numpy as np
import pytest

from napari_inrst.align.kabsch import rigid_matrix
from napari_inrst.stack import apply_transform
from napari_inrst.viewer.layers import SECTION_KEY, stack_layer_data
from tests.viewer.test_deform_view import _grid_for, _warp_of

pytest.importorskip("torch")

TINY = dict(batch_size=256, width=16, depth=1, rank=4, val_every=10, patience=3, rc_pretrain_steps=5, threads=1,
            checkpoint_every=10)


def test_train_deform_checkbox_and_view_sections_where_the_field_puts_them(make_napari_viewer, qtbot):
    from napari_inrst._qt.train import TrainWidget
    from napari_inrst._qt.view import ViewWidget
    from napari_inrst.align.deform import deformations_json
    from napari_inrst.synthetic.sample import sample_stack

    stack, _ = sample_stack(n_genes=12, n_sections=5, missing=(), spot_spacing=150.0)
    stack.set_transforms([s.adata.uns["truth_matrix"] for s in stack.sections])
    before = [m.copy() for m in stack.transforms()]
    viewer = make_napari_viewer()
    for data, kw, _ in stack_layer_data(stack):
        viewer.add_points(data, **kw)
    w = TrainWidget(viewer)
    qtbot.addWidget(w)
    w.extra_config = dict(TINY)
    w.state.nice = 1  # (as the other Train tests: a child at niceness 10 is starved on a loaded machine)
    w.steps.setValue(20)
    assert not w.deform.isChecked() and w.deform.text() == "deform sections"
    w.deform.setChecked(True)
    w.start()
    qtbot.waitUntil(lambda: not w.running, timeout=180_000)
    field = w.field
    assert field is not None, w.status.text()
    ref = field.stack_meta["refinement"]  # what `fit --deform` records
    assert ref["settings"]["deform"] is True and len(ref["deformation"]) == len(stack)
    assert w.state.placement is not None and w.state.placement["names"] == stack.names
    for s, m in zip(stack.sections, before):  # the viewer's stack is not moved by training
        np.testing.assert_array_equal(s.transform, m)

    # the field says section k lies elsewhere (refined transform) and is warped (known warp)
    k, amp = 1, 30.0
    warp = _warp_of(stack[k], amp)
    mats = [np.asarray(m, dtype=float) for m in field.stack_meta["transforms"]]
    mats[k] = rigid_matrix(5.0, (40.0, -25.0), center=stack[k].xy.mean(axis=0)) @ mats[k]
    defs = [None] * len(stack)
    defs[k] = _grid_for(stack[k], warp)
    field.stack_meta["transforms"] = [m.tolist() for m in mats]
    field.stack_meta["deformation"] = deformations_json(stack.names, defs)
    v = ViewWidget(viewer)
    qtbot.addWidget(v)
    v.set_field(field, genes=[field.genes[0]])
    qtbot.waitUntil(lambda: not v.busy, timeout=60_000)
    layer = next(lyr for lyr in viewer.layers if lyr.metadata.get(SECTION_KEY) == k)
    truth = apply_transform(mats[k], stack[k].xy_input + warp(stack[k].xy_input))
    err = np.linalg.norm(layer.data[:, [2, 1]] - truth, axis=1)
    assert err.mean() < 0.06 * amp, err.mean()
    stack_place = np.linalg.norm(stack[k].xy - truth, axis=1).mean()
    assert stack_place > 20.0  # (where the viewer's stack puts it: far from it)
    other = next(lyr for lyr in viewer.layers if lyr.metadata.get(SECTION_KEY) == 0)
    np.testing.assert_allclose(other.data[:, [2, 1]], apply_transform(mats[0], stack[0].xy_input), atol=1e-4)
