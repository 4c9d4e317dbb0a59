"""The Align widget's view model without Qt: manual corrections, undo, results."""

import numpy as np

from napari_inrst.synthetic.sample import rigid_matrix


def test_align_state_manual_corrections_move_about_the_centroid_and_undo(small):
    from types import SimpleNamespace

    from napari_inrst.viewer.align_state import AlignState

    stack0, _ = small
    stack = stack0.select(range(len(stack0)))
    st = AlignState(undo_merge_s=0.0)
    moved = []
    st.moved.connect(moved.append)
    st.set_stack(stack)
    xy0 = stack[0].xy.copy()
    c = xy0.mean(axis=0)
    st.set_manual(0, (90.0, 0.0, 0.0, False))
    np.testing.assert_allclose(stack[0].xy, (xy0 - c) @ np.array([[0, -1], [1, 0]]).T + c, atol=1e-6)
    st.set_manual(0, (0.0, 10.0, 0.0, True))
    np.testing.assert_allclose(stack[0].xy[:, 0], 2 * c[0] - xy0[:, 0] + 10.0, atol=1e-6)
    assert st.table()[0][2] == "yes" and moved == [0, 0]
    st.reset(0)
    np.testing.assert_allclose(stack[0].xy, xy0, atol=1e-6)
    assert st.undo() == 0 and st.edit(0) == (0.0, 10.0, 0.0, True)
    assert st.undo() == 0 and st.undo() == 0 and st.undo() is None and not st.can_undo
    np.testing.assert_allclose(stack[0].xy, xy0, atol=1e-6)
    # a result is written into the stack and becomes the base of later corrections
    shift = rigid_matrix(0.0, (5.0, 0.0))
    result = SimpleNamespace(reference=2, method="rigid", residual_um=[1.0, 3.0], mirrored=[False] * len(stack),
                             apply=lambda s_: [setattr(sec, "transform", shift) for sec in s_.sections])
    st.apply_result(result)
    assert moved[-1] == -1 and np.allclose(st.base[0], shift) and st.table()[0][3] == "1.0"
    assert st.result_message().startswith(f"aligned onto {stack.names[2]} (rigid); median residual 2.0 µm")
