"""Alignment: closed-form fits against known motions, recovery of the synthetic sample's truth,
bad input named by section."""

import numpy as np
import pytest

from napari_inrst.align import AlignCancelled, align_stack, kabsch, rigid_params, transforms_json
from napari_inrst.errors import InputError
from napari_inrst.sample import rigid_matrix
from napari_inrst.stack import apply_transform, build_stack


# --- kabsch ------------------------------------------------------------------------------------
def _points(n=40, seed=0):
    return np.random.default_rng(seed).uniform(-300, 300, (n, 2))


@pytest.mark.parametrize("angle", [-170.0, -30.0, 0.0, 12.5, 90.0, 179.0])
def test_kabsch_recovers_known_rigid_motion(angle):
    x = _points()
    M = rigid_matrix(angle, shift=(120.0, -45.0), center=(10.0, 20.0))
    np.testing.assert_allclose(kabsch(x, apply_transform(M, x)), M, atol=1e-9)


def test_kabsch_reflection_guard_and_allowed_reflection():
    x = _points()
    M = rigid_matrix(25.0, shift=(5.0, 7.0), mirror=True)
    y = apply_transform(M, x)
    R = kabsch(x, y)  # guarded: a proper rotation even though the data are mirrored
    assert np.linalg.det(R[:2, :2]) == pytest.approx(1.0)
    assert not np.allclose(R, M, atol=1e-3)
    F = kabsch(x, y, allow_reflection=True)
    np.testing.assert_allclose(F, M, atol=1e-9)
    assert rigid_params(F)["mirrored"] and rigid_params(F)["angle_deg"] == pytest.approx(25.0)


def test_kabsch_similarity_scale_and_weights():
    x = _points()
    M = rigid_matrix(-40.0, shift=(3.0, 4.0))
    M[:2, :2] *= 1.3
    y = apply_transform(M, x)
    np.testing.assert_allclose(kabsch(x, y, scale=True), M, atol=1e-9)
    # rigid fit of scaled data keeps det 1
    assert np.linalg.det(kabsch(x, y)[:2, :2]) == pytest.approx(1.0)
    # zero weights ignore outliers entirely
    y_bad = y.copy()
    y_bad[:5] += 1000.0
    w = np.ones(len(x))
    w[:5] = 0
    np.testing.assert_allclose(kabsch(x, y_bad, weights=w, scale=True), M, atol=1e-9)


def test_kabsch_rejects_degenerate_input():
    with pytest.raises(ValueError):
        kabsch(np.zeros((1, 2)), np.zeros((1, 2)))
    with pytest.raises(ValueError):
        kabsch(np.zeros((5, 2)), np.ones((5, 2)))  # coincident source points
    with pytest.raises(ValueError):
        kabsch(np.zeros((5, 2)), np.zeros((4, 2)))


def test_transforms_json_format():
    rows = transforms_json(["a", "b"], [np.eye(3), rigid_matrix(90.0, shift=(1.0, 2.0))])
    assert rows[0] == {"section": "a", "matrix": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]}
    assert rows[1]["matrix"][0][2] == 1.0 and rows[1]["matrix"][2] == [0.0, 0.0, 1.0]


# --- the synthetic sample: recovery against the analytic truth -------------------------------
@pytest.fixture(scope="module")
def aligned_sample():
    from napari_inrst.sample import sample_stack

    stack, _ = sample_stack()
    steps = []
    res = align_stack(stack, progress=lambda d, t, m: steps.append((d, t)))
    return stack, res, steps


def test_sample_reference_is_the_unmoved_middle_section(aligned_sample):
    stack, res, _ = aligned_sample
    assert res.reference == len(stack) // 2
    np.testing.assert_allclose(stack[res.reference].adata.uns["truth_matrix"], np.eye(3))
    np.testing.assert_allclose(res.matrices[res.reference], np.eye(3))


def test_sample_alignment_recovers_truth_and_finds_mirror(aligned_sample):
    stack, res, steps = aligned_sample
    width = np.ptp(stack[res.reference].xy_input[:, 0])
    for s, m in zip(stack.sections, res.matrices):
        truth = s.adata.uns["truth_matrix"]
        err = np.linalg.norm(apply_transform(m, s.xy_input) - apply_transform(truth, s.xy_input), axis=1)
        assert err.mean() < 0.02 * width, (s.name, err.mean())
        np.testing.assert_allclose(m[:2, :2], truth[:2, :2], atol=0.02)
    assert res.mirrored == [bool(s.adata.uns["mirrored"]) for s in stack]
    assert sum(res.mirrored) == 1
    assert len(res.residual_um) == len(stack) - 1
    spot = stack[0].spot_diameter_um() / 0.55  # spot spacing
    assert all(0 < r < 0.6 * spot for r in res.residual_um)
    assert steps[-1][0] == steps[-1][1] and len(steps) == len(stack)
    # apply() writes into the stack
    other = stack.select(range(len(stack)))
    res.apply(other)
    for s, m in zip(other.sections, res.matrices):
        np.testing.assert_allclose(s.transform, m)


def test_other_reference_and_method_none(sample):
    stack, _ = sample
    sub = stack.select([2, 3])
    res = align_stack(sub, reference=0)
    truth = [s.adata.uns["truth_matrix"] for s in sub]
    rel = np.linalg.inv(truth[0]) @ truth[1]  # section 1 → section 0's frame
    np.testing.assert_allclose(res.matrices[0], np.eye(3))
    x = sub[1].xy_input
    assert np.linalg.norm(apply_transform(res.matrices[1], x) - apply_transform(rel, x), axis=1).mean() < 20
    none = align_stack(sub, method="none")
    assert all(np.allclose(m, np.eye(3)) for m in none.matrices)
    assert none.residual_um[0] > 3 * res.residual_um[0]  # unaligned sections are measured as such


def test_similarity_recovers_a_scale(sample):
    stack, _ = sample
    sub = stack.select([3, 4])
    # rescale section 0's coordinates by 1.2: the similarity fit must undo it
    sub.sections[0].adata = sub.sections[0].adata.copy()
    sub.sections[0].adata.obsm["spatial"] = sub.sections[0].adata.obsm["spatial"] * 1.2
    res = align_stack(sub, reference=1, method="similarity")
    assert rigid_params(res.matrices[0])["scale"] == pytest.approx(1 / 1.2, rel=0.02)


def test_cancel(sample):
    stack, _ = sample
    with pytest.raises(AlignCancelled):
        align_stack(stack.select([0, 1, 2]), should_stop=lambda: True)


# --- bad input ---------------------------------------------------------------------------------
def _stack(make_section, sections, genes=("A", "B", "C", "D")):
    return build_stack(sections, [10.0 * i for i in range(len(sections))],
                       names=[f"sec{i}" for i in range(len(sections))])


def test_fewer_than_two_sections(make_section):
    st = _stack(make_section, [make_section()])
    with pytest.raises(InputError, match="sec0.*at least 2 sections"):
        align_stack(st)


def test_fewer_than_three_shared_genes(make_section):
    st = _stack(make_section, [make_section(genes=("A", "B"), seed=1), make_section(genes=("A", "B", "C"), seed=2)])
    with pytest.raises(InputError, match="sec0.*2 shared genes"):
        align_stack(st)


def test_genes_not_expressed_in_both_sections(make_section):
    a, b = make_section(seed=1), make_section(seed=2)
    b.X[:, 1:] = 0  # only gene A expressed in sec1
    st = _stack(make_section, [a, b])
    with pytest.raises(InputError, match="sec0, sec1.*at least 3 shared genes"):
        align_stack(st)


def test_fewer_than_ten_spots(make_section):
    st = _stack(make_section, [make_section(), make_section(n=8, seed=3)])
    with pytest.raises(InputError, match="sec1: has 8 spots"):
        align_stack(st)


def test_collinear_coordinates(make_section):
    b = make_section(seed=4)
    t = np.linspace(0, 1, b.n_obs)
    b.obsm["spatial"] = np.column_stack([100 * t, 50 * t + 3])
    st = _stack(make_section, [make_section(), b])
    with pytest.raises(InputError, match="sec1: has collinear coordinates"):
        align_stack(st)


def test_bad_reference_and_method(make_section):
    st = _stack(make_section, [make_section(), make_section(seed=5)])
    with pytest.raises(InputError, match="reference section 5 is out of range"):
        align_stack(st, reference=5)
    with pytest.raises(InputError, match="method"):
        align_stack(st, method="affine")
