"""Align overlay model (no Qt): before ≠ after colours, legend, undo history of manual corrections."""

import numpy as np

from napari_inrst.align.overlay import IDENTITY, ManualEdits, legend_html, overlay_points


def test_overlay_colours_per_section_and_before_differs():
    xys = [np.zeros((3, 2)), np.ones((2, 2))]
    data, after = overlay_points(xys)
    _, before = overlay_points(xys, before=True)
    assert data.shape == (5, 2) and len(np.unique(after, axis=0)) == 2
    assert not np.isin(before.round(3), after.round(3)).all(axis=1).any()
    html = legend_html(["s0", "s1"], before_shown=True)
    assert "s0" in html and "s1" in html and "greyed" in html


def test_manual_edits_undo_merges_quick_changes_of_one_section():
    m = ManualEdits(merge_s=1.0)
    m.set(0, (10.0, 0, 0, False), now=0.0)
    m.set(0, (20.0, 0, 0, False), now=0.5)  # same section, quick: one step with the previous
    m.set(1, (0.0, 5, 0, False), now=0.6)
    m.set(1, (0.0, 9, 0, False), now=5.0)  # slow: a step of its own
    assert m.undo() == 1 and m.get(1) == (0.0, 5, 0, False)
    assert m.undo() == 1 and m.get(1) == IDENTITY
    assert m.undo() == 0 and m.get(0) == IDENTITY
    assert m.undo() is None and not m.can_undo
