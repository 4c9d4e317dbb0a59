"""Alignment: closed-form fits against known motions, recovery of the synthetic sample's truth,
bad input named by section."""

import numpy as np
import pytest

from napari_inrst.align import AlignCancelled, align_stack, kabsch, rigid_params, transforms_json
from napari_inrst.errors import InputError
from napari_inrst.synthetic.sample import rigid_matrix
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
    from napari_inrst.synthetic.sample import sample_stack

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


# --- one pair under known motions: the extremes of the issue, mirrors, partial overlap -----------
@pytest.fixture(scope="module")
def aligned_pair():
    """Two adjacent synthetic sections in their true frame, and the tissue (width 2000 µm)."""
    from napari_inrst.synthetic.sample import make_sample

    secs, tissue = make_sample(misplace=False, n_genes=60, seed=5)
    return secs[3], secs[4], tissue


def _align_moved_pair(aligned_pair, angle, shift_frac, mirror=False, keep_a=1.0, keep_b=1.0):
    """Crop a to its left ``keep_a`` and b to its right ``keep_b`` (fraction of spots by x), move a
    by a known motion, align a onto b. Returns (mean error µm against the motion, result)."""
    a, b, tissue = aligned_pair
    xa, xb = np.asarray(a.obsm["spatial"]), np.asarray(b.obsm["spatial"])
    a = a[xa[:, 0] <= np.quantile(xa[:, 0], keep_a)].copy()
    b = b[xb[:, 0] >= np.quantile(xb[:, 0], 1 - keep_b)].copy()
    M = rigid_matrix(angle, np.asarray(shift_frac) * tissue.width, mirror=mirror, center=tissue.center)
    a.obsm["spatial"] = apply_transform(np.linalg.inv(M), np.asarray(a.obsm["spatial"]))
    st = build_stack([a, b], [0.0, 30.0], names=["a", "b"])
    res = align_stack(st, reference=1)
    x = st[0].xy_input
    return float(np.linalg.norm(apply_transform(res.matrices[0], x) - apply_transform(M, x), axis=1).mean()), res


@pytest.mark.parametrize("angle,shift,mirror", [(30.0, (0.25, 0.25), False), (-30.0, (-0.25, 0.25), True)])
def test_pair_at_the_extremes_of_rotation_shift_and_mirror(aligned_pair, angle, shift, mirror):
    err, res = _align_moved_pair(aligned_pair, angle, shift, mirror)
    assert err < 10.0, err  # µm; spots 50 µm apart, section 2000 µm wide
    assert res.mirrored == [mirror, False]
    assert res.residual_um[0] < 0.5 * 50


@pytest.mark.parametrize("keep_a,keep_b,angle,shift,mirror", [
    (0.5, 1.0, -25.0, (0.2, -0.1), True),   # a covers only half of b (and is mirrored)
    (0.7, 0.7, 15.0, (0.1, 0.2), False),    # each covers 70 %: they share the middle 40 % of the width
])
def test_partial_overlap(aligned_pair, keep_a, keep_b, angle, shift, mirror):
    """Centring each section on its own mean, or pulling spots towards the other section's edge,
    moved these fits by 70–500 µm; the target is well under half a spot spacing."""
    err, res = _align_moved_pair(aligned_pair, angle, shift, mirror, keep_a, keep_b)
    assert err < 15.0, err
    assert res.mirrored[0] == mirror


def test_batch_effect_on_a_partly_covered_section(aligned_pair):
    """A per-gene factor on one section (log-sd 0.5, as between runs or platforms) that also covers
    only 60 % of the other does not move the fit."""
    a, b, tissue = aligned_pair
    a = a.copy()
    f = np.exp(np.random.default_rng(1).normal(0, 0.5, a.n_vars))
    a.X = np.random.default_rng(2).poisson(np.asarray(a.X) * f).astype(np.float32)
    err, res = _align_moved_pair((a, b, tissue), 20.0, (0.15, -0.2), False, 0.6, 1.0)
    assert err < 15.0, err


@pytest.mark.shared
@pytest.mark.slow
def test_merfish_pair_recovers_a_known_motion_and_mirror(merfish_dir):
    """Real single-cell sections 50 µm apart: moving (and mirroring) one by a known motion and
    aligning again must give the same alignment as the unmoved pair (the published frame only
    centres each section, so it is not the truth), and report the mirror."""
    from napari_inrst.io.readers import read_h5ad

    ads = [read_h5ad(merfish_dir / f"section_{k}.h5ad", counts_expected=False) for k in ("14", "19")]
    base = align_stack(build_stack(ads, [0.0, 50.0], names=["s14", "s19"], normalize="none"), reference=0)
    moved = ads[1].copy()
    xy = np.asarray(moved.obsm["spatial"], dtype=float)
    M = rigid_matrix(-22.0, (310.0, -180.0), mirror=True, center=xy.mean(axis=0))
    moved.obsm["spatial"] = apply_transform(np.linalg.inv(M), xy)
    res = align_stack(build_stack([ads[0], moved], [0.0, 50.0], names=["s14", "s19"], normalize="none"),
                      reference=0, seed=7)
    x = np.asarray(moved.obsm["spatial"])
    err = np.linalg.norm(apply_transform(res.matrices[1], x) - apply_transform(base.matrices[1] @ M, x), axis=1)
    assert err.mean() < 10.0, err.mean()
    assert res.mirrored == [False, True] and base.mirrored == [False, False]


# --- bad input ---------------------------------------------------------------------------------
def _stack(make_section, sections, genes=("A", "B", "C", "D")):
    return build_stack(sections, [10.0 * i for i in range(len(sections))],
                       names=[f"sec{i}" for i in range(len(sections))])


def test_fewer_than_two_sections(make_section):
    st = _stack(make_section, [make_section()])
    with pytest.raises(InputError, match="sec0.*at least 2 sections"):
        align_stack(st)


def test_fewer_than_three_shared_genes(make_section):
    # refused when the stack is built (aligned or not), before any alignment
    with pytest.raises(InputError, match="sec0.*2 shared genes"):
        _stack(make_section, [make_section(genes=("A", "B"), seed=1), make_section(genes=("A", "B", "C"), seed=2)])


def test_genes_not_expressed_in_both_sections(make_section):
    a, b = make_section(seed=1), make_section(seed=2)
    b.X[:, 1:] = 0  # only gene A expressed in sec1
    st = _stack(make_section, [a, b])
    with pytest.raises(InputError, match="sec0, sec1.*at least 3 shared genes"):
        align_stack(st)


def test_fewer_than_ten_spots(make_section):
    with pytest.raises(InputError, match="sec1: has 8 spots"):
        _stack(make_section, [make_section(), make_section(n=8, seed=3)])


def test_collinear_coordinates(make_section):
    b = make_section(seed=4)
    t = np.linspace(0, 1, b.n_obs)
    b.obsm["spatial"] = np.column_stack([100 * t, 50 * t + 3])
    with pytest.raises(InputError, match="sec1: has collinear coordinates"):
        _stack(make_section, [make_section(), b])


def test_bad_reference_and_method(make_section):
    st = _stack(make_section, [make_section(), make_section(seed=5)])
    with pytest.raises(InputError, match="reference section 5 is out of range"):
        align_stack(st, reference=5)
    with pytest.raises(InputError, match="method"):
        align_stack(st, method="affine")
