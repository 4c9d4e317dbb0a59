"""Level of detail of large sections (Qt-free)."""

import numpy as np

from napari_inrst.render.sections import extreme_cells, lod_indices, lod_rank


def test_level_of_detail_keeps_the_section_extent():
    """Every subset drawn holds the section's outermost cells, so the layer's extent (and napari's
    dims range, whose change re-slices every layer) stays that of the whole section."""
    xy = np.random.default_rng(0).random((30_000, 2)) * np.array([3000.0, 2000.0])
    rank = lod_rank(len(xy))
    full = (xy.min(0), xy.max(0))
    zoomed_out = lod_indices(xy, rank, cap=1000)
    zoomed_in = lod_indices(xy, rank, rect=(100.0, 300.0, 100.0, 250.0), cap=1000)
    assert len(zoomed_out) == 1000 and set(extreme_cells(xy)) <= set(zoomed_out)
    inside = (xy[:, 0] >= 100) & (xy[:, 0] <= 300) & (xy[:, 1] >= 100) & (xy[:, 1] <= 250)
    assert set(np.flatnonzero(inside)) <= set(zoomed_in)  # full resolution in view…
    assert len(zoomed_in) == len(zoomed_out) == 1000  # …in a layer of fixed size (filled up outside)
    for idx in (zoomed_out, zoomed_in):
        np.testing.assert_array_equal(xy[idx].min(0), full[0])
        np.testing.assert_array_equal(xy[idx].max(0), full[1])
        assert np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(lod_indices(xy[:500], rank[:500], cap=1000), np.arange(500))  # small: all
