import numpy as np

from napari_inrst.synthetic.sample import SyntheticTissue, make_sample


def test_sample_has_missing_sections_known_spacing_and_motions():
    sections, tissue = make_sample()
    z = [a.uns["z_um"] for a in sections]
    assert len(sections) >= 8
    assert 90.0 not in z and 210.0 not in z  # positions 3 and 7 are missing
    assert np.allclose(np.diff(z) % 30.0, 0)
    mirrored = [a.uns["mirrored"] for a in sections]
    assert sum(mirrored) == 1
    dets = [np.linalg.det(a.uns["truth_matrix"][:2, :2]) for a in sections]
    assert sorted(np.sign(dets)) == [-1] + [1] * (len(sections) - 1)
    # truth matrix maps slide coordinates back inside the tissue
    for a in sections:
        M = a.uns["truth_matrix"]
        xy = a.obsm["spatial"] @ M[:2, :2].T + M[:2, 2]
        assert tissue.inside(np.column_stack([xy, np.full(len(xy), a.uns["z_um"])])).all()


def test_counts_follow_the_analytic_truth():
    sections, tissue = make_sample()
    a = sections[2]
    M = a.uns["truth_matrix"]
    xy = a.obsm["spatial"] @ M[:2, :2].T + M[:2, 2]
    truth = tissue.truth(np.column_stack([xy, np.full(len(xy), a.uns["z_um"])]))
    X = np.asarray(a.X)
    meas = np.log1p(X / X.sum(1, keepdims=True) * 1e4)
    g = tissue.genes.index("LayerB")
    assert np.corrcoef(meas[:, g], truth[:, g])[0, 1] > 0.8


def test_truth_is_continuous_with_sharp_features():
    t = SyntheticTissue()
    x = np.linspace(0, t.width, 2001)
    pts = np.column_stack([x, np.full_like(x, t.height / 2), np.full_like(x, 100.0)])
    v = t.truth(pts)
    steps = np.abs(np.diff(v, axis=0)).max()
    assert np.isfinite(v).all() and steps < 1.0  # continuous at 1 µm steps
    assert v.std(axis=0).max() > 0.5  # but with real structure
