"""Per-section deformations in the Align view model (issue 14, "See it"), without Qt: a known warp
drawn as a warped grid and a |d| map in µm, switched off and on per section with undo, kept where
the fit reads it; the non-rigid job on a small stack."""

import pickle
from types import SimpleNamespace

import numpy as np
import pytest

from napari_inrst.align.deform import Deformation
from napari_inrst.align.kabsch import rigid_matrix
from napari_inrst.align.nonrigid import solve_grid
from napari_inrst.stack import apply_transform


def _warp_of(section, amp):
    """A smooth known warp of ``amp`` µm over ``section`` (one period across it), as in
    tests/align/test_deform.py: a function of input-frame points."""
    lo, w = section.xy_input.min(axis=0), float(np.ptp(section.xy_input, axis=0).max())

    def warp(xy):
        u = (np.asarray(xy) - lo) / w
        return np.column_stack([amp * np.sin(2 * np.pi * u[:, 1] + 0.3), amp * np.cos(2 * np.pi * u[:, 0] + 1.1)])
    return warp


def _grid_for(section, warp):
    """The B-spline grid fitted to the known warp over the section's grid box."""
    g = Deformation.for_points(section.xy_input)
    pts = g.grid_points(40)
    return solve_grid(g, pts, warp(pts), np.ones(len(pts)), bend=1e-4)


def _result(stack, defs, mats):
    def apply(s_):
        for sec, m in zip(s_.sections, mats):
            sec.transform = m
    return SimpleNamespace(reference=1, method="nonrigid", residual_um=[1.0] * (len(stack) - 1),
                           mirrored=[False] * len(stack), deformations=defs, apply=apply)


def test_known_warp_is_drawn_switched_off_and_undone(small):
    from napari_inrst.viewer.align_state import AlignState
    from napari_inrst.viewer.deform_view import (
        cell_magnitudes,
        magnitude_map,
        warped_grid,
    )

    stack0, _ = small
    stack = stack0.select(range(len(stack0)))
    for sec in stack.sections:  # (its own AnnData: the unit factor below rescales coordinates in place)
        sec.adata = sec.adata.copy()
    k, amp = 0, 40.0
    _known_warp = _warp_of(stack[k], amp)
    grid = _grid_for(stack[k], _known_warp)
    mats = [np.eye(3) for _ in stack]
    mats[k] = rigid_matrix(25.0, (300.0, -120.0), center=stack[k].xy_input.mean(axis=0))
    defs = [None] * len(stack)
    defs[k] = grid
    st = AlignState(undo_merge_s=10.0)
    moved, changed = [], []
    st.moved.connect(moved.append)
    st.deform_changed.connect(changed.append)
    st.set_stack(stack)
    st.apply_result(_result(stack, defs, mats))
    s = stack[k]
    rigid_xy = apply_transform(mats[k], s.xy_input)
    # kept on the section: its stack-frame cells (what the overlay and the fit use) include it
    assert s.deformation is grid and st.deformation(k) is grid and st.has_deformation(k)
    truth = apply_transform(mats[k], s.xy_input + _known_warp(s.xy_input))
    err = np.linalg.norm(s.xy - truth, axis=1)  # the grid's fit of the warp (4 × 4 cells)
    assert err.mean() < 0.06 * amp and err.max() < 0.15 * amp
    assert np.linalg.norm(s.xy - rigid_xy, axis=1).mean() > 0.5 * amp
    # the warped grid: each vertex displaced from the straight grid by the known warp (rotated by M)
    warped, straight = warped_grid(s.transform, grid)
    assert len(warped) == (grid.shape[0] - 2) + (grid.shape[1] - 2)
    errs = []
    for w, p in zip(warped, straight):
        x_in = apply_transform(np.linalg.inv(mats[k]), p[:, ::-1])  # the line in the input frame
        exact = grid.displacement(x_in) @ mats[k][:2, :2].T
        np.testing.assert_allclose(w - p, exact[:, ::-1], atol=1e-6)
        errs.append(np.linalg.norm((w - p) - (_known_warp(x_in) @ mats[k][:2, :2].T)[:, ::-1], axis=1))
    errs = np.concatenate(errs)
    assert errs.mean() < 0.06 * amp and errs.max() < 0.2 * amp
    # the magnitude map (µm): its max is the deformation's max at the cells
    img, scale, translate = magnitude_map(s, grid)
    cells = cell_magnitudes(s, grid)
    assert np.nanmax(img) == pytest.approx(cells.max(), rel=0.03)
    assert np.isnan(img).any() and scale[0] == scale[1] > 0
    assert np.nanmax(img) == pytest.approx(np.linalg.norm(_known_warp(s.xy_input), axis=1).max(), rel=0.1)
    # the map sits over the placed section: translate (y0, x0) at its lower corner
    np.testing.assert_allclose(translate, rigid_xy.min(axis=0)[::-1])

    # a manual correction, then the deformation switched off, then on, then undo all
    st.set_manual(k, (10.0, 0.0, 0.0, False))
    xy_manual = s.xy.copy()
    assert st.set_deformation_on(k, False) and changed[-1] == k and moved[-1] == k
    assert s.deformation is None and st.has_deformation(k) and not st.deformation_on(k)
    np.testing.assert_allclose(s.xy, apply_transform(s.transform, s.xy_input))
    assert not st.set_deformation_on(k, False)  # already off: no step
    assert not st.set_deformation_on(1, True)  # no fitted deformation
    st.set_manual(k, (20.0, 0.0, 0.0, False))  # after the switch: a step of its own (not merged)
    assert st.undo() == k and s.deformation is None and st.edit(k)[0] == 10.0
    assert st.undo() == k and s.deformation is grid  # the switch undone
    np.testing.assert_allclose(s.xy, xy_manual)
    assert st.undo() == k and st.edit(k)[0] == 0.0 and st.undo() is None and not st.can_undo
    np.testing.assert_allclose(s.xy, truth, atol=0.1 * amp)

    # what the Train widget's fit gets (the stack copy sent to the training process, then the
    # prepared stack) keeps the kept deformation, and not a switched-off one
    from napari_inrst.field.background import prepare_stack

    sent = pickle.loads(pickle.dumps(stack))
    prepared = prepare_stack(sent, None, copy=True)
    assert prepared[k].deformation is not None
    np.testing.assert_allclose(prepared[k].deformation.coef, grid.coef)
    st.set_deformation_on(k, False)
    assert prepare_stack(pickle.loads(pickle.dumps(stack)), None, copy=True)[k].deformation is None
    st.set_deformation_on(k, True)
    # a new unit factor (the Sections widget) scales the grid with the coordinates: the same tissue, ×2
    xy1 = s.xy.copy()
    stack.set_unit_factor(2.0 * stack.unit_factor)
    np.testing.assert_allclose(s.xy, 2.0 * xy1, atol=1e-6)
    # a rigid result clears the deformations (they were fitted against the alignment it replaces)
    st.apply_result(_result(stack, None, mats))
    assert not st.has_deformation(k) and s.deformation is None and changed[-1] == -1


def test_nonrigid_job_keeps_a_deformation_per_section():
    from napari_inrst.synthetic.sample import sample_stack
    from napari_inrst.viewer.align_state import AlignState

    stack, _ = sample_stack(n_sections=4, missing=(), n_genes=12, spot_spacing=150.0)
    st = AlignState()
    st.set_stack(stack)
    before = stack.transforms()
    gen = st.job(1, "nonrigid")()
    steps = []
    while True:
        try:
            steps.append(next(gen))
        except StopIteration as stop:
            res = stop.value
            break
    assert steps[-1][0] == steps[-1][1] and "deformation" in steps[-2][2]
    for s, m in zip(stack.sections, before):  # the job leaves the stack alone
        np.testing.assert_array_equal(s.transform, m)
        assert s.deformation is None
    st.apply_result(res)
    assert res.method == "nonrigid" and res.deformations[1] is None
    for i, s in enumerate(stack.sections):
        assert (s.deformation is None) == (i == 1) and st.has_deformation(i) == (i != 1)
        if s.deformation is not None:
            assert np.abs(s.deformation.coef).max() <= s.deformation.max_disp_um + 1e-9
    assert "nonrigid" in st.result_message()


def test_view_sections_are_placed_where_the_field_puts_them(small):
    """The View's measured sections (viewer/view_jobs.sections_job): with the model's transforms
    (the refinement composed in) and its deformations, as ``map`` places them; a model of other
    sections leaves them where the stack puts them."""
    from napari_inrst.align.deform import deformations_json
    from napari_inrst.align.mapping import map_points
    from napari_inrst.viewer.view_jobs import sections_job

    stack, _ = small
    k, amp = 2, 30.0
    warp = _warp_of(stack[k], amp)
    grid = _grid_for(stack[k], warp)
    mats = [np.asarray(m) for m in stack.transforms()]
    mats[k] = rigid_matrix(4.0, (12.0, -7.0), center=stack[k].xy_input.mean(axis=0)) @ mats[k]  # "refined"
    defs = [None] * len(stack)
    defs[k] = grid
    meta = {"names": list(stack.names), "z": [float(s.z) + 1.0 for s in stack], "unit_factor": 1.0,
            "transforms": [m.tolist() for m in mats], "deformation": deformations_json(stack.names, defs)}
    items = [("layer-a", 0), ("layer-k", k)]
    out = list(sections_job(stack, stack.genes[0], "viridis", None, items, {}, meta))
    assert [o[0] for o in out] == ["layer-a", "layer-k"] and all(o[4] for o in out)
    for (_, _, (idx, zyx, values, rgba), _, _), (_, i) in zip(out, items):
        expect = map_points(meta, i, stack[i].xy_input)  # (x, y, z) where `map` puts them
        np.testing.assert_allclose(zyx, expect[:, ::-1], atol=1e-9)
        assert len(values) == len(rgba) == stack[i].n_obs
    zyx_k = out[1][2][1]
    truth = apply_transform(mats[k], stack[k].xy_input + warp(stack[k].xy_input))
    assert np.linalg.norm(zyx_k[:, [2, 1]] - truth, axis=1).mean() < 0.06 * amp
    # without a matching model (other names; none): the stack's own placement, not moved
    for other in (dict(meta, names=[n + "x" for n in stack.names]), None):
        (_, _, (_, zyx, _, _), _, moved), = sections_job(stack, stack.genes[0], "viridis", None, [("l", k)], {}, other)
        assert not moved
        np.testing.assert_allclose(zyx[:, [2, 1]], stack[k].xy)


def test_train_state_deform_plan_and_resume_puts_the_placement_back(tmp_path, small):
    """The Train widget's "deform sections": a new run refines with deformations (as ``fit
    --deform``; run end to end in tests/_qt/test_train_deform.py); Resume puts the first part's
    placement back (transforms and grids) instead of refining again."""
    from napari_inrst.field.background import placement_of, refine_for_fit
    from napari_inrst.viewer.train_state import TrainState

    stack0, _ = small
    stack = stack0.select(range(len(stack0)))
    cfg = SimpleNamespace(ensemble=1, steps=20, seed=0)
    st = TrainState(tmp_path / "t.ckpt", in_child=False)
    args = st.begin(stack, cfg, None, deform=True)
    assert args == (stack, cfg, None, None, None) and st._plan == {"deform": True, "placement": None}
    st.ended()
    # what the first part leaves (a refined transform and a grid of section k), put back on Resume
    k = 1
    trained = stack.select(range(len(stack)))
    trained[k].transform = rigid_matrix(3.0, (5.0, 2.0)) @ trained[k].transform
    trained[k].deformation = _grid_for(trained[k], _warp_of(trained[k], 20.0))
    st.placement = pickle.loads(pickle.dumps(placement_of(trained)))  # (from the child: plain data)
    st.prepared = (stack, None, list(stack.genes))
    st.checkpoint.write_bytes(b"x")
    st.begin(stack, cfg, None, resume=True, deform=True)
    assert st._plan == {"deform": False, "placement": st.placement}
    st.ended()
    again = stack.select(range(len(stack)))
    assert refine_for_fit(again, cfg, placement=st._plan["placement"]) is None
    np.testing.assert_allclose(again[k].xy, trained[k].xy)
    assert again[0].deformation is None and again[k].deformation is not None
    st.begin(stack, cfg, None, deform=False)  # a new run without it: nothing refined or put back
    assert st._plan == {"deform": False, "placement": None} and st.placement is None
