"""Metrics, baselines and protocols against answers computed by hand or known by construction."""

import numpy as np
import pytest

from napari_inrst.measure import baselines as B
from napari_inrst.measure import metrics as M
from napari_inrst.evaluate import protocol as P
from napari_inrst.evaluate.fitting import FieldPredictor


# --- metrics ---------------------------------------------------------------------------------
def test_pearson_perfect_anti_and_constant_genes():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(50, 4))
    t[:, 3] = 2.0  # constant gene: not counted
    assert M.pearson_per_gene(t, t) == pytest.approx(1.0)
    assert M.pearson_per_gene(t, -t) == pytest.approx(-1.0)
    assert M.pearson_per_gene(t, 3 * t + 1) == pytest.approx(1.0)  # scale/offset invariant
    p = t.copy()
    p[:, 0] = 5.0  # a constant prediction of a varying gene scores 0
    assert M.pearson_per_gene(t, p) == pytest.approx(2 / 3)
    r = M.pearson_each(t, p)
    assert np.isnan(r[3]) and r[0] == 0


def test_pearson_matches_numpy_corrcoef():
    rng = np.random.default_rng(1)
    t, p = rng.normal(size=(40, 3)), rng.normal(size=(40, 3))
    want = np.mean([np.corrcoef(t[:, k], p[:, k])[0, 1] for k in range(3)])
    assert M.pearson_per_gene(t, p) == pytest.approx(want)


def test_binned_means_use_bins_with_three_cells():
    # bin A (x in [0, 50)) holds 3 cells, bin B 4 cells, bin C only 2 cells (dropped)
    xy = np.array([[1, 1], [10, 5], [20, 20], [60, 1], [70, 10], [80, 30], [90, 40], [110, 5], [120, 5]], float)
    t = np.array([1, 2, 3, 10, 10, 10, 14, 100, 100], float)[:, None]
    p = np.array([0, 0, 3, 1, 1, 1, 1, 7, 7], float)[:, None]
    bt, bp = M.binned(xy, t, p, 50.0)
    np.testing.assert_allclose(np.sort(bt[:, 0]), [2.0, 11.0])
    np.testing.assert_allclose(bp[np.argsort(bt[:, 0]), 0], [1.0, 1.0])
    # fewer than 3 bins → NaN rather than a meaningless correlation
    assert np.isnan(M.binned_pearson(xy, t, p, 50.0))


def test_binned_pearson_perfect_and_smoothing_helps():
    rng = np.random.default_rng(2)
    xy = rng.uniform(0, 1000, (3000, 2))
    smooth = np.column_stack([np.sin(xy[:, 0] / 200), np.cos(xy[:, 1] / 150)])
    noisy = smooth + rng.normal(0, 1.0, smooth.shape)
    assert M.binned_pearson(xy, noisy, noisy, 100) == pytest.approx(1.0)
    per_cell = M.pearson_per_gene(noisy, smooth)
    assert M.binned_pearson(xy, noisy, smooth, 100) > per_cell + 0.2  # bins average the noise away


def test_rmse_by_hand():
    t = np.zeros((2, 2))
    p = np.array([[1.0, -1.0], [3.0, 1.0]])
    assert M.rmse(t, p) == pytest.approx(np.sqrt(12 / 4))
    np.testing.assert_allclose(M.rmse_each(t, p), [np.sqrt(5), 1.0])


@pytest.mark.parametrize("single_cell", [False, True])
def test_ssim_perfect_is_one_and_noise_lowers_it(single_cell):
    rng = np.random.default_rng(3)
    if single_cell:
        xy = rng.uniform(0, 800, (4000, 2))
    else:
        gx, gy = np.meshgrid(np.arange(20) * 100.0, np.arange(15) * 100.0)
        xy = np.column_stack([gx.ravel(), gy.ravel()])
    t = np.column_stack([np.sin(xy[:, 0] / 300), xy[:, 1] / 1000, np.ones(len(xy))])
    r = M.Raster.from_positions(xy)
    assert (r.sigma > 0) == single_cell
    s = M.ssim_each(xy, t, t)
    assert s[:2] == pytest.approx([1.0, 1.0]) and np.isnan(s[2])  # constant gene skipped
    assert M.ssim_per_gene(xy, t, t) == pytest.approx(1.0)
    noisy = t + rng.normal(0, 0.5, t.shape)
    assert M.ssim_per_gene(xy, t, noisy) < 0.9


def test_raster_spot_grid_one_pixel_per_spot():
    gx, gy = np.meshgrid(np.arange(6) * 200.0, np.arange(4) * 200.0)
    xy = np.column_stack([gx.ravel(), gy.ravel()]) + 3.0
    r = M.Raster.from_positions(xy)
    assert r.shape == (4, 6) and r.mask.all()
    img = r.image(np.arange(24.0))
    np.testing.assert_allclose(img.ravel(), np.arange(24.0))


def test_ari_hand_computed_values():
    assert M.adjusted_rand_score([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]) == pytest.approx(0.8 / 3.3)
    assert M.adjusted_rand_score([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5)
    a = ["x", "x", "y", "z", "z", "y"]
    assert M.adjusted_rand_score(a, [5, 5, 7, 1, 1, 7]) == pytest.approx(1.0)  # relabelled
    assert M.adjusted_rand_score([1, 1, 1], [2, 2, 2]) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    rand = M.adjusted_rand_score(rng.integers(0, 4, 5000), rng.integers(0, 4, 5000))
    assert abs(rand) < 0.01  # chance level is 0


def test_classifier_separates_clusters():
    rng = np.random.default_rng(4)
    centres = rng.normal(0, 5, (3, 10))
    y = np.repeat(["a", "b", "c"], 40)
    X = centres[np.repeat(np.arange(3), 40)] + rng.normal(0, 0.5, (120, 10))
    clf = M.LabelClassifier().fit(X, y)
    assert M.adjusted_rand_score(y, clf.predict(X)) == pytest.approx(1.0)


def test_top_expressed_genes():
    X = np.array([[0, 5, 1, 9], [0, 7, 1, 9]], float)
    np.testing.assert_array_equal(M.top_expressed_genes(X, 2), [1, 3])


# --- baselines -------------------------------------------------------------------------------
def test_idw_by_hand_and_exact_hits():
    pts = np.array([[0, 0, 0], [3, 0, 0], [100, 0, 0]], float)
    X = np.array([[1.0], [5.0], [1000.0]])
    # query at x=1: distances 1 and 2 → weights 1 and 1/2
    got = B.idw(pts, X, np.array([[1.0, 0, 0]]), k=2)
    assert got[0, 0] == pytest.approx((1 * 1 + 5 * 0.5) / 1.5)
    # a query on a kept point takes its value
    assert B.knn3d(pts, X, pts[:1], k=3)[0, 0] == pytest.approx(1.0, abs=1e-4)
    assert B.knn2d(pts[:, :2], X, np.array([[3.0, 0.0]]), k=2)[0, 0] == pytest.approx(5.0, abs=1e-4)


def test_knn3d_uses_five_neighbours_in_3d():
    pts = np.array([[0, 0, z] for z in (1, 2, 3, 4, 5, 6)], float)
    X = np.array([[1], [1], [1], [1], [1], [100.0]])
    # the 6th point is the farthest: not among the 5 nearest of the origin
    assert B.knn3d(pts, X, np.zeros((1, 3)))[0, 0] == pytest.approx(1.0)


def test_adjacent_means_three_nearest_in_each_neighbour_section():
    xy0 = np.array([[0, 0], [1, 0], [0, 1], [50, 50]], float)
    X0 = np.array([[1.0], [2.0], [3.0], [100.0]])
    xy2 = np.array([[0, 0], [2, 0], [0, 2], [40, 40]], float)
    X2 = np.array([[10.0], [20.0], [30.0], [500.0]])
    far = (40.0, np.array([[0, 0.0]]), np.array([[1e6]]))  # a section that is not adjacent
    secs = [(0.0, xy0, X0), (20.0, xy2, X2), far]
    got = B.adjacent(secs, np.array([[0.1, 0.1, 10.0]]))
    assert got[0, 0] == pytest.approx(((1 + 2 + 3) / 3 + (10 + 20 + 30) / 3) / 2)
    # beyond the last section: only the one below counts
    got = B.adjacent(secs[:2], np.array([[0.1, 0.1, 30.0]]))
    assert got[0, 0] == pytest.approx(20.0)


# --- protocols on the synthetic sample (analytic truth) --------------------------------------
@pytest.fixture(scope="module")
def aligned():
    from napari_inrst.synthetic.sample import sample_stack

    stack, tissue = sample_stack(misplace=False, n_genes=60, spot_spacing=70.0)
    return stack, tissue


def _truth_fit(tissue):
    from napari_inrst.field.api import TruthField

    def fit(stack, sections):
        return FieldPredictor(TruthField(tissue), stack.genes)

    return fit


def _oracle_fit(stack, sections):
    """Returns the measured values wherever it is asked (a perfect prediction)."""
    lookup = {tuple(np.round(p, 6)): x for s in stack for p, x in zip(s.xyz, s.X)}

    class Oracle:
        def predict(self, xyz):
            return np.array([lookup[tuple(np.round(p, 6))] for p in xyz])

    return Oracle()


def test_perfect_prediction_scores_one(aligned):
    stack, _ = aligned
    st = stack.select(range(len(stack)))
    for s in st:  # give each section a label from its x so ARI is defined
        s.adata.obs["lab"] = np.where(s.xy[:, 0] > 1000, "right", "left")
    r = P.leave_out(st, _oracle_fit, [3], labels_key="lab", genes="all")
    inr = r["methods"]["inr"]
    assert inr["pearson"] == pytest.approx(1.0) and inr["rmse"] == pytest.approx(0.0, abs=1e-6)
    assert inr["ssim"] == pytest.approx(1.0) and inr["ari"] == pytest.approx(r["ari_measured"])
    assert set(r["methods"]) == {"inr", "knn3d", "adjacent"}
    assert r["methods"]["knn3d"]["pearson"] < 0.9
    assert r["holdout"] == [stack[3].name] and stack[3].name not in r["kept"]


def test_truth_field_held_out_scores_match_analytic_expectation(aligned):
    """The analytic truth predicts a held-out section as well as the noise allows, and better
    than both baselines; its score equals the direct truth-vs-measured correlation."""
    stack, tissue = aligned
    h = 3
    r = P.leave_out(stack, _truth_fit(tissue), [h], genes="all")
    s = stack[h]
    direct = M.pearson_per_gene(s.X, tissue.truth(s.xyz))
    assert r["methods"]["inr"]["pearson"] == pytest.approx(direct, abs=1e-6)
    assert r["methods"]["inr"]["pearson"] > r["methods"]["knn3d"]["pearson"] + 0.02
    assert r["methods"]["inr"]["pearson"] > r["methods"]["adjacent"]["pearson"]
    assert r["methods"]["inr"]["rmse"] < r["methods"]["knn3d"]["rmse"]
    assert r["methods"]["inr"]["fit_seconds"] >= 0
    assert r["hardware"].startswith(("cpu", "cuda"))


def test_labels_give_classifier_and_domain_ari(aligned):
    stack, tissue = aligned
    st = stack.select(range(len(stack)))
    for s in st:
        s.adata = s.adata.copy()
        s.adata.obs["layer"] = tissue.programs(s.xyz)[:, :5].argmax(1).astype(str)
    r = P.leave_out(st, _truth_fit(tissue), [4], labels_key="layer", genes="all", ssim=False)
    inr = r["methods"]["inr"]
    assert inr["ari"] > 0.5 and inr["ari"] >= r["methods"]["knn3d"]["ari"] - 0.05
    assert 0.2 < inr["ari_domains"] <= 1.0  # unsupervised domains of the latent follow the layers
    assert "ari_domains" not in r["methods"]["knn3d"]  # baselines have no latent


def test_leave_one_section_out_averages_interior_sections(aligned):
    stack, _ = aligned
    r = P.leave_one_section_out(stack, None, genes=20, ssim=False)
    assert len(r["holdout"]) == len(stack) - 2
    per = r["methods"]["knn3d"]["per_section"]
    assert r["methods"]["knn3d"]["pearson"] == pytest.approx(np.mean([v["pearson"] for v in per.values()]))
    assert r["genes_scored"] == 20 and "most expressed" in r["gene_selection"]


def test_intra_section_removes_half_with_fixed_seed(aligned):
    stack, tissue = aligned
    st, removed = P.drop_spots(stack, 2, 0.5, seed=0)
    _, removed2 = P.drop_spots(stack, 2, 0.5, seed=0)
    np.testing.assert_array_equal(removed, removed2)
    assert len(removed) == round(stack[2].n_obs / 2) and st[2].n_obs == stack[2].n_obs - len(removed)
    assert stack[2].n_obs == len(stack[2].xy)  # the input stack is untouched
    r = P.intra_section(stack, 2, _truth_fit(tissue))
    assert r["n_removed"] == len(removed)
    assert r["methods"]["inr"]["pearson"] > r["methods"]["knn2d"]["pearson"]


def test_bad_holdouts_are_refused(aligned):
    stack, _ = aligned
    with pytest.raises(IndexError):
        P.leave_out(stack, None, [len(stack)])
    with pytest.raises(ValueError):
        P.leave_out(stack, None, list(range(len(stack))))


def test_format_table_lists_methods(aligned):
    stack, _ = aligned
    r = P.leave_out(stack, None, [2], genes=10, ssim=False)
    text = P.format_table(r)
    assert "knn3d" in text and "adjacent" in text and "pearson" in text
