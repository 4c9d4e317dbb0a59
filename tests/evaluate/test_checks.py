"""QC core on the synthetic sample (known truth): gaps, outlier sections, uncertainty, 3D domains."""

import numpy as np
import pytest

from napari_inrst.evaluate import checks as qc
from napari_inrst.synthetic.sample import rigid_matrix, sample_stack

from ..conftest import fast_fit


@pytest.fixture(scope="module")
def aligned():
    return sample_stack(misplace=False, n_genes=40, spot_spacing=80.0)


def test_gap_overview_marks_missing_positions_as_wide(aligned):
    stack, _ = aligned
    ov = qc.gap_overview(stack)
    assert [s["z_um"] for s in ov["sections"]] == [0, 30, 60, 120, 150, 180, 240, 270]
    assert ov["median_spacing_um"] == 30
    wide = [(g["z0"], g["z1"]) for g in ov["gaps"] if g["wide"]]
    assert wide == [(60, 120), (180, 240)]  # the sample's missing positions 3 and 7
    st = stack.select(range(len(stack)))
    st[1].excluded = True  # a damaged section does not close its gap
    ov = qc.gap_overview(st)
    assert (0, 60, True) in [(g["z0"], g["z1"], g["wide"]) for g in ov["gaps"]]
    text = qc.format_gaps(ov)
    assert "excluded" in text and "WIDE gap 60 µm (≈1 section missing)" in text
    # every gap is listed with its width, in z order between its sections
    ov = qc.gap_overview(stack)
    lines = qc.format_gaps(ov).splitlines()
    assert sum("| gap 30 µm" in ln for ln in lines) == 5 and sum("WIDE gap 60 µm" in ln for ln in lines) == 2
    k = next(i for i, ln in enumerate(lines) if "section_02" in ln)
    assert "WIDE gap 60" in lines[k + 1] and "section_04" in lines[k + 2]
    assert qc.missing_estimate(90.0, 30.0) == 2 and qc.missing_estimate(30.0, 30.0) == 0


def test_robust_z_ignores_one_outlier():
    z = qc.robust_z([1.0, 1.1, 0.9, 1.0, 5.0])
    assert abs(z[:4]).max() < 1.5 and z[4] > 10
    assert qc.robust_z([1, 1, 1, 1], min_spread=0.5).tolist() == [0, 0, 0, 0]


def test_damaged_section_flag_fires_on_distorted_section_only(aligned):
    """A section rotated by 25° (a failed alignment) disagrees with the field trained without it;
    the clean sections – edges included – are not flagged."""
    stack, tissue = aligned
    st = stack.select(range(len(stack)))
    bad = 4
    st[bad].transform = rigid_matrix(25, center=tissue.center)
    seen = []
    rows = qc.section_consistency(st, fast_fit, progress=seen.append)
    assert len(seen) == len(st) and seen[-1]["done"] == len(st)
    flagged = [r["index"] for r in rows if r["flagged"]]
    assert flagged == [bad], [(r["name"], round(r["z_score"], 1), round(r["z_rmse"], 1)) for r in rows]
    assert rows[bad]["reason"] and rows[bad]["score"] < min(r["score"] for r in rows if r["index"] != bad)


def test_uncertainty_is_higher_in_a_wide_gap_than_at_measured_sections(aligned):
    stack, _ = aligned
    kept = [0, 1, 2, 5, 6, 7]  # sections at z 120 and 150 left out: a 120 µm gap from 60 to 180
    ens = qc.fit_ensemble(stack, fast_fit, kept, k=3)
    xy = stack[1].xy  # points inside tissue

    def u(z):
        return float(ens.uncertainty(np.column_stack([xy, np.full(len(xy), z)])).mean())

    gap = np.mean([u(100), u(120), u(140)])
    measured = np.mean([u(30), u(60), u(180)])
    assert gap > 1.1 * measured, (gap, measured)
    outside = float(ens.uncertainty(np.column_stack([xy + 3000.0, np.full(len(xy), 120.0)])).mean())
    assert outside > 2 * gap  # far outside the tissue the members disagree most
    # per gene and on a grid: shapes napari can show
    assert ens.uncertainty(stack[0].xyz[:5], genes=[0, 3]).shape == (5,)
    from napari_inrst.render.grids import grid_over

    grid = grid_over([0, 0, 0], [2000, 1500, 270], 250.0, 90.0)
    vol = ens.volume(grid)
    assert vol.shape == grid.shape == (4, 7, 9) and np.isfinite(vol).all()
    # rendered like a gene: the uncertainty is an ExpressionField with one gene
    from napari_inrst.field.api import ExpressionField

    uf = qc.UncertaintyField(ens)
    assert isinstance(uf, ExpressionField) and uf.genes == ["uncertainty"]
    pts = np.column_stack([xy[:4], np.full(4, 120.0)])
    np.testing.assert_allclose(uf.decode(uf.latent(pts), [0])[:, 0], ens.uncertainty(pts), rtol=1e-5)
    assert uf.occupancy(pts).shape == (4,) and len(uf.bounds()) == 2


def test_kmeans_recovers_separated_clusters():
    from napari_inrst.measure.metrics import adjusted_rand_score

    rng = np.random.default_rng(0)
    c = rng.normal(0, 10, (4, 5))
    y = np.repeat(np.arange(4), 50)
    X = c[y] + rng.normal(0, 0.3, (200, 5))
    lab, cent = qc.kmeans(X, 4, seed=0)
    assert adjusted_rand_score(y, lab) == pytest.approx(1.0) and cent.shape == (4, 5)


def test_domains_3d_of_truth_follow_tissue_layers(aligned):
    from napari_inrst.field.api import TruthField

    stack, tissue = aligned
    f = TruthField(tissue, stack.genes)
    dom = qc.domains_3d(f, k=5, stack=stack)
    assert dom.labels.dtype == np.int32 and set(np.unique(dom.labels)) == set(range(6))
    inside = f.occupancy(dom.grid.points()).reshape(dom.grid.shape) >= 0.5
    assert ((dom.labels > 0) == inside).all()  # 0 exactly outside tissue
    s = stack.select([3])[0]
    s.adata = s.adata.copy()
    s.adata.obs["layer"] = tissue.programs(s.xyz)[:, :5].argmax(1).astype(str)
    assert qc.domain_ari(f, dom, s, "layer") > 0.25
    assert dom.grid.scale[0] == 15.0 and dom.grid.translate == (0.0, 0.0, 0.0)


def test_default_ensemble_members_are_single_networks_with_own_seeds_and_spots(aligned, monkeypatch):
    """The uncertainty's members: one network each (the field's own small-data averaging would
    shrink their disagreement), each with its own seed and its own 90 % of the spots."""
    import napari_inrst.field.fit as train
    from napari_inrst.measure.baselines import KNN3D

    stack, _ = aligned
    seen = []

    def fake_fit_field(st, config=None, *, sections=None, **kw):
        seen.append((config.ensemble, config.seed, st.sections[0].n_obs, list(sections)))
        return KNN3D(st, sections)

    monkeypatch.setattr(train, "fit_field", fake_fit_field)
    ens = qc.fit_ensemble(stack, None, [0, 1, 2], k=3, seed=7)
    assert [s[:2] for s in seen] == [(1, 7), (1, 8), (1, 9)] and all(s[3] == [0, 1, 2] for s in seen)
    assert {s[2] for s in seen} == {round(0.9 * stack[0].n_obs)}
    assert len(ens.members) == 3 and ens.scale.shape == (stack.n_genes,)
