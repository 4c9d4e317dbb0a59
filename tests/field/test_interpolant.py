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
    ip = Interpolant(xyz, X, np.eye(X.shape[1]), 1.0, mix=1.0, k_sections=3)
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


def test_mixed_interpolant_is_the_weighted_sum_of_knn_and_sections():
    from napari_inrst.measure.baselines import knn3d

    rng = np.random.default_rng(2)
    _, xyz, X = _stack(rng)
    q = np.column_stack([rng.uniform(0, 1000, (100, 2)), rng.uniform(-20, 180, 100)])
    knn = Interpolant(xyz, X, np.eye(X.shape[1]), 1.0, k=5)
    sec = Interpolant(xyz, X, np.eye(X.shape[1]), 1.0, mix=1.0)
    mixed = Interpolant(xyz, X, np.eye(X.shape[1]), 1.0, k=5, mix=0.25)
    assert (knn.kind, sec.kind, mixed.kind) == ("knn", "sections", "mix")
    np.testing.assert_allclose(knn(q), knn3d(xyz, X, q, 5), atol=1e-5)
    np.testing.assert_allclose(mixed(q), 0.75 * knn(q) + 0.25 * sec(q), atol=1e-5)


def test_interpolant_mix_round_trips_and_is_checked():
    rng = np.random.default_rng(1)
    _, xyz, X = _stack(rng, n=50)
    ip = Interpolant(xyz, X, np.eye(X.shape[1]), 0.3, k=5, mix=0.5, k_sections=2)
    m = ip.meta()
    assert m["kind"] == "mix" and m["mix"] == 0.5 and m["k_sections"] == 2
    back = Interpolant.from_tensors(ip.tensors(), m)
    q = xyz[:20] + 1.0
    np.testing.assert_allclose(back(q), ip(q))
    # a file without "mix" (earlier versions) is the 3D kNN interpolant
    old = {k: v for k, v in m.items() if k not in ("kind", "mix", "k_sections")}
    assert Interpolant.from_tensors(ip.tensors(), old).kind == "knn"

    def bad(msg):
        raise ValueError(msg)

    with pytest.raises(ValueError, match="interp.mix"):
        Interpolant.shapes({**m, "mix": 1.5}, X.shape[1], bad)
    with pytest.raises(ValueError, match="interp.mix"):
        Interpolant.shapes({**m, "dims": 2}, X.shape[1], bad)
    with pytest.raises(ValueError, match="mix"):
        Interpolant(xyz, X, np.eye(X.shape[1]), 0.3, mix=-0.1)
