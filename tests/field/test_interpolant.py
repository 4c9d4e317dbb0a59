"""The interpolants a field is blended with, against the baselines they stand for."""

import numpy as np
import pytest

from napari_inrst.field.interpolant import Interpolant
from napari_inrst.measure.baselines import adjacent, knn_mean


def _stack(rng, zs=(0.0, 50.0, 100.0, 160.0), n=300, g=4):
    secs = []
    for z in zs:
        xy = rng.uniform(0, 1000, (n, 2))
        secs.append((z, xy, rng.normal(size=(n, g)).astype(np.float32)))
    xyz = np.concatenate([np.column_stack([xy, np.full(len(xy), z)]) for z, xy, _ in secs])
    X = np.concatenate([X for *_, X in secs])
    return secs, xyz, X


def test_sections_interpolant_is_the_adjacent_baseline_between_sections_and_linear_in_z():
    rng = np.random.default_rng(0)
    secs, xyz, X = _stack(rng)
    ip = Interpolant(xyz, X, np.eye(X.shape[1]), 1.0, k=3, kind="sections")
    q = rng.uniform(0, 1000, (200, 2))
    mid = np.column_stack([q, np.full(len(q), 25.0)])  # midway between the first two sections
    kept = [secs[0], secs[1]]
    np.testing.assert_allclose(ip(mid), adjacent(kept, mid, k=3), atol=1e-5)
    # at a section's own z: that section alone (its k nearest cells)
    at = np.column_stack([q, np.full(len(q), 100.0)])
    np.testing.assert_allclose(ip(at), knn_mean(secs[2][1], secs[2][2], q, 3), atol=1e-5)
    # linear in z between two sections (continuous: no jump when z crosses a section)
    lo, hi = knn_mean(secs[2][1], secs[2][2], q, 3), knn_mean(secs[3][1], secs[3][2], q, 3)
    z = 100.0 + 0.25 * 60.0
    np.testing.assert_allclose(ip(np.column_stack([q, np.full(len(q), z)])), 0.75 * lo + 0.25 * hi, atol=1e-5)
    np.testing.assert_allclose(ip(np.column_stack([q, np.full(len(q), 100.0 + 1e-3)])), lo, atol=1e-3)
    # beyond the stack: the nearest section
    np.testing.assert_allclose(ip(np.column_stack([q, np.full(len(q), 400.0)])), hi, atol=1e-5)
    np.testing.assert_allclose(ip(np.column_stack([q, np.full(len(q), -30.0)])),
                               knn_mean(secs[0][1], secs[0][2], q, 3), atol=1e-5)
    # one call with points at many z is the same as one call per z
    many = np.concatenate([mid, at])
    np.testing.assert_allclose(ip(many), np.concatenate([ip(mid), ip(at)]), atol=1e-6)


def test_interpolant_kind_round_trips_and_is_checked():
    rng = np.random.default_rng(1)
    _, xyz, X = _stack(rng, n=50)
    ip = Interpolant(xyz, X, np.eye(X.shape[1]), 0.3, k=3, kind="sections")
    m = ip.meta()
    assert m["kind"] == "sections"
    back = Interpolant.from_tensors(ip.tensors(), m)
    q = xyz[:20] + 1.0
    np.testing.assert_allclose(back(q), ip(q))
    # a file without "kind" (earlier versions) is the 3D kNN interpolant
    old = {k: v for k, v in m.items() if k != "kind"}
    assert Interpolant.from_tensors(ip.tensors(), old).kind == "knn"

    def bad(msg):
        raise ValueError(msg)

    with pytest.raises(ValueError, match="interp.kind"):
        Interpolant.shapes({**m, "kind": "spline"}, X.shape[1], bad)
    with pytest.raises(ValueError, match="kind"):
        Interpolant(xyz, X, np.eye(X.shape[1]), 0.3, kind="spline")
