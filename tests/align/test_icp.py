"""ICP internals that must match their plain definitions."""

import numpy as np
import pytest
from scipy.spatial import cKDTree

from napari_inrst.align.icp import _MovedTree
from napari_inrst.align.kabsch import rigid_matrix
from napari_inrst.stack import apply_transform


@pytest.mark.parametrize("scale,bound", [(1.0, np.inf), (1.3, 40.0)])
def test_moved_tree_answers_as_a_tree_of_the_moved_points(scale, bound):
    """The tree of the unmoved points, queried with points moved back, gives the neighbours and
    distances of a tree built on the moved points (rigid or similarity; with a distance bound)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 500, (400, 2))
    M = rigid_matrix(23.0, (40.0, -15.0), center=(250, 250))
    M[:2, :2] *= scale
    p = rng.uniform(-50, 600, (300, 2))
    d0, j0 = cKDTree(apply_transform(M, x)).query(p, k=6, distance_upper_bound=bound)
    d1, j1 = _MovedTree(cKDTree(x), M, scale).query(p, k=6, distance_upper_bound=bound)
    np.testing.assert_array_equal(j1, j0)
    np.testing.assert_allclose(d1, d0, rtol=1e-9)
    if np.isfinite(bound):
        assert np.isinf(d1).any() and (j1 == len(x)).any()  # the bound is applied (missing neighbours)
