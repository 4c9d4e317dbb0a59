"""The expression field: training on the synthetic sample against its analytic truth, the model
file, cancel/checkpoint/resume, repeatability, occupancy."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_inrst.errors import InputError  # noqa: E402
from napari_inrst.field import ExpressionField, FieldConfig, Fourier, HashGrid  # noqa: E402
from napari_inrst.field.fit import fit_field, iter_fit, load_checkpoint  # noqa: E402
from napari_inrst.field.model import load_model  # noqa: E402

#: small and quick: fixed wavelengths (no probe runs), narrow trunk
QUICK = dict(steps=160, batch_size=1024, width=64, depth=2, rank=16, val_every=20, patience=4,
             encoding=Fourier(min_wavelength_xy_um=100.0), rc_pretrain_steps=30, threads=1, ensemble=1)


@pytest.fixture(scope="module")
def aligned():
    """The synthetic sample with its true transforms (aligned), 60 genes, and its tissue."""
    from napari_inrst.synthetic.sample import sample_stack

    stack, tissue = sample_stack(n_genes=60)
    stack.set_transforms([s.adata.uns["truth_matrix"] for s in stack.sections])
    return stack, tissue


@pytest.fixture(scope="module")
def model(aligned):
    stack, _ = aligned
    return fit_field(stack, FieldConfig(**QUICK))


def _pearson(a, b):
    r = [np.corrcoef(a[:, g], b[:, g])[0, 1] for g in range(a.shape[1]) if a[:, g].std() > 1e-6 and b[:, g].std() > 1e-9]
    return float(np.mean(r))


def _plane(tissue, z, seed=0):
    xy = tissue.spots(z, 60.0, np.random.default_rng(seed))
    return np.column_stack([xy, np.full(len(xy), z)])


def test_field_predicts_unmeasured_sections_close_to_truth(aligned, model):
    stack, tissue = aligned
    for z in (90.0, 210.0, 135.0):  # the two missing sections and a point between sections
        xyz = _plane(tissue, z)
        truth = tissue.truth(xyz, model.genes)
        pred = model.predict(xyz)
        assert pred.shape == truth.shape and pred.dtype == np.float32
        # much better than predicting each gene's mean everywhere, and well correlated with the truth
        rmse = np.sqrt(((pred - truth) ** 2).mean())
        rmse_mean = np.sqrt(((truth - truth.mean(0)) ** 2).mean())
        assert rmse < 0.7 * rmse_mean, (z, rmse, rmse_mean)
        assert _pearson(truth, pred) > 0.75


def test_field_is_an_expression_field_with_consistent_latent_and_decode(aligned, model):
    stack, tissue = aligned
    assert isinstance(model, ExpressionField)
    xyz = _plane(tissue, 60.0)[:200]
    lat = model.latent(xyz)
    assert lat.shape == (200, model.rank) and lat.dtype == np.float32
    g = [model.genes.index("LayerA"), model.genes.index("BlobA")]
    np.testing.assert_allclose(model.decode(lat, g), model.predict(xyz, ["LayerA", "BlobA"]), rtol=1e-5, atol=1e-5)
    lo, hi = model.bounds()
    c = stack.coords()
    np.testing.assert_allclose(lo, c.min(0), atol=1e-3)
    np.testing.assert_allclose(hi, c.max(0), atol=1e-3)
    with pytest.raises(KeyError):
        model.predict(xyz, ["NoSuchGene"])


def test_occupancy_separates_tissue_from_empty_slide(aligned, model):
    stack, tissue = aligned
    z = float(stack.sections[2].z)
    inside = stack.sections[2].xyz
    rng = np.random.default_rng(1)
    lo, hi = model.bounds()
    cand = np.column_stack([rng.uniform(lo[0] - 300, hi[0] + 300, 4000), rng.uniform(lo[1] - 300, hi[1] + 300, 4000),
                            np.full(4000, z)])
    from scipy.spatial import cKDTree

    far = cand[cKDTree(inside[:, :2]).query(cand[:, :2])[0] > 200]
    assert len(far) > 100
    assert (model.occupancy(inside) > 0.5).mean() > 0.95
    assert (model.occupancy(far) < 0.5).mean() > 0.9
    masked = model.predict(far[:50], ["LayerA"], masked=True)
    assert np.isnan(masked).mean() > 0.8


def test_model_file_round_trip(tmp_path, aligned, model):
    stack, tissue = aligned
    path = tmp_path / "m.inrst"
    model.save(path)
    m2 = load_model(path)
    xyz = _plane(tissue, 100.0)[:300]
    np.testing.assert_array_equal(m2.predict(xyz), model.predict(xyz))
    np.testing.assert_array_equal(m2.occupancy(xyz), model.occupancy(xyz))
    assert m2.genes == model.genes and m2.normalize == "log1p"
    assert m2.stack_meta["names"] == stack.names
    np.testing.assert_allclose(np.array(m2.stack_meta["transforms"]), np.array(stack.transforms()))
    assert m2.config == model.config and m2.config.encoding.min_wavelength_xy_um == 100.0
    assert m2.provenance["date"] and m2.provenance["napari_inrst"]
    assert [t["section"] for t in m2.transforms()] == stack.names


def test_bad_model_files_give_clear_errors(tmp_path, model):
    good = tmp_path / "good.inrst"
    model.save(good)
    data = good.read_bytes()
    cases = {
        "truncated.inrst": data[: len(data) // 2],
        "noise.inrst": bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)),
        "empty.inrst": b"",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    # a valid safetensors file that is not ours
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(3)}, str(tmp_path / "foreign.inrst"))
    # a pickle (would run code if loaded naively)
    import pickle

    (tmp_path / "pickle.inrst").write_bytes(pickle.dumps({"a": 1}))
    for name in [*cases, "foreign.inrst", "pickle.inrst", "missing.inrst"]:
        with pytest.raises(InputError) as e:
            load_model(tmp_path / name)
        assert name in str(e.value)


def test_same_seed_same_model_and_cancel_keeps_best_so_far(aligned):
    stack, tissue = aligned
    cfg = FieldConfig(**{**QUICK, "steps": 40, "val_every": 10})
    a = fit_field(stack, cfg, sections=[0, 1, 2])
    b = fit_field(stack, cfg, sections=[0, 1, 2])
    xyz = _plane(tissue, 30.0)[:100]
    np.testing.assert_array_equal(a.predict(xyz), b.predict(xyz))
    seen = []
    c = fit_field(stack, cfg, sections=[0, 1, 2], progress=seen.append, should_stop=lambda: len(seen) >= 2)
    assert c.provenance["cancelled"] and c.provenance["steps_run"] < 40
    assert np.isfinite(c.predict(xyz)).all()


def test_iter_fit_yields_progress_and_returns_the_model(aligned):
    stack, _ = aligned
    # every term of the paper's loss switched on (the consistency term is off by default)
    gen = iter_fit(stack, FieldConfig(**{**QUICK, "steps": 30, "val_every": 10, "lambda_rc": 0.1}), sections=[0, 1])
    items = []
    while True:
        try:
            items.append(next(gen))
        except StopIteration as stop:
            model = stop.value
            break
    # selection (validated on held-out spots: two sections) for 30 steps, then the final fit on
    # every spot up to the selected step
    sel = [it for it in items if it["phase"] == "select"]
    fin = [it for it in items if it["phase"] == "fit"]
    assert sel and fin and items.index(fin[0]) > items.index(sel[-1])
    assert sel[-1]["step"] == 30 and fin[-1]["step"] == 30 + model.provenance["best_step"]
    assert {it["total"] for it in items} == {60} == {model.provenance["steps_planned"]}  # fixed up front
    assert model.provenance["steps_total_run"] == 30 + model.provenance["best_step"]
    assert model.provenance["kept"] == "final fit"
    assert {"step", "total", "loss", "losses", "val", "eta_s"} <= set(items[0])
    assert {"rec", "rc", "kl", "occ"} <= set(items[0]["losses"])
    assert any(it["val"] is not None for it in sel)
    assert model.provenance["steps_run"] == items[-1]["step"]
    assert model.validation["task"] == "held-out spots"
    # each term is switchable: λ = 0 leaves it out of the loss and the report
    off = [it["losses"] for it in iter_fit(stack, FieldConfig(**{**QUICK, "steps": 10, "val_every": 5,
                                                                  "lambda_rc": 0.0, "lambda_kl": 0.0}),
                                           sections=[0, 1])]
    assert off and all(set(d) == {"rec", "occ"} for d in off)


def test_checkpoint_and_resume_continue_where_training_stopped(tmp_path, aligned):
    stack, tissue = aligned
    ck = tmp_path / "ck.pt"
    cfg = FieldConfig(**{**QUICK, "steps": 60, "val_every": 10, "checkpoint_every": 20, "patience": 100})
    seen = []
    first = fit_field(stack, cfg, sections=[0, 1, 2], checkpoint=ck, progress=seen.append,
                      should_stop=lambda: bool(seen) and seen[-1]["step"] >= 40)
    assert first.provenance["cancelled"] and ck.exists()
    assert load_checkpoint(ck)["meta"]["phase"] == "select"
    steps = []
    done = fit_field(stack, cfg, sections=[0, 1, 2], resume=ck,
                     progress=lambda d: steps.append((d["phase"], d["step"])))
    # the selection continued from the checkpoint (step 40), not from 0, then the final fit ran
    assert steps[0][0] == "select" and 40 < steps[0][1] <= 50 and ("select", 60) in steps
    assert steps[-1] == ("fit", 60 + done.provenance["best_step"])
    assert not done.provenance["cancelled"] and done.provenance["steps_run"] == steps[-1][1]
    # a checkpoint of the final fit resumes the final fit (the selection is not repeated)
    seen = []
    fit_field(stack, cfg, sections=[0, 1, 2], checkpoint=ck, progress=seen.append,
              should_stop=lambda: bool(seen) and seen[-1]["phase"] == "fit" and seen[-1]["step"] >= 70)
    assert load_checkpoint(ck)["meta"]["phase"] == "final"
    steps = []
    again = fit_field(stack, cfg, sections=[0, 1, 2], resume=ck,
                      progress=lambda d: steps.append((d["phase"], d["step"])))
    assert {p for p, _ in steps} == {"fit"} and 70 < steps[0][1] <= 80
    assert again.validation == done.validation
    (tmp_path / "bad.pt").write_bytes(b"nonsense")
    with pytest.raises(InputError):
        fit_field(stack, cfg, sections=[0, 1, 2], resume=tmp_path / "bad.pt")


def test_single_section_is_2d_completion_with_an_ensemble(aligned, tmp_path):
    stack, tissue = aligned
    s = stack.sections[3]
    model = fit_field(stack, FieldConfig(**{**QUICK, "steps": 80, "ensemble": 2, "rank": 0}), sections=[3])
    assert model.provenance["members"] == 2 and model.config.rank == 8  # small data: auto rank 8
    # two members' latents side by side (then the interpolant's, when blended), one linear decoder
    assert model.rank == 16 + (model.interp.q if model.interp is not None else 0)
    xyz = _plane(tissue, s.z, seed=5)
    truth = tissue.truth(xyz, model.genes)
    pred = model.predict(xyz)
    assert _pearson(truth, pred) > 0.7
    model.save(tmp_path / "e.inrst")
    np.testing.assert_array_equal(load_model(tmp_path / "e.inrst").predict(xyz), pred)


def test_config_json_round_trip_and_validation():
    cfg = FieldConfig(encoding=HashGrid(finest_um=33.0), rank=48, lambda_rc=0.0)
    again = FieldConfig.from_json(cfg.to_json())
    assert again == cfg
    assert json.loads(cfg.to_json())["rank"] == 48
    for bad in ({"encoding": "wavelet"}, {"rank": -1}, {"width": 0}, {"lambda_kl": -1.0}, {"device": "tpu"},
                {"standardize": "sometimes"}):
        with pytest.raises(InputError):
            FieldConfig(**bad).validate()
    with pytest.raises(InputError):
        FieldConfig.from_dict({"rank": 8, "nonsense": 1})


def test_targets_are_z_scores_for_panels_and_centred_values_for_many_genes(aligned, model):
    """standardize="auto": a panel of ≤ 500 modeled genes trains on per-gene z-scores, more genes
    on centred values (genes weigh by their variance); the model stores the resolved choice, and
    its predictions are in the data's units either way."""
    from napari_inrst.field.data import StackData

    stack, tissue = aligned
    cfg = FieldConfig(**QUICK)
    PANEL_GENES = cfg.panel_genes
    assert cfg.standardize == "auto" and PANEL_GENES == 500
    assert cfg.resolved_standardize(PANEL_GENES) is True and cfg.resolved_standardize(PANEL_GENES + 1) is False
    assert model.config.standardize is True  # 60 genes: z-scores, stored resolved
    X = stack.expression(stack.training_sections())
    z = StackData(stack, cfg.replace(standardize=True))
    np.testing.assert_allclose(z.std, X.std(0), rtol=1e-4)
    c = StackData(stack, cfg.replace(standardize=False))
    assert np.all(c.std == 1.0)
    np.testing.assert_allclose(c.mean, X.mean(0), rtol=1e-4, atol=1e-6)  # centred, not scaled
    np.testing.assert_allclose(c.targets.mean(0), 0.0, atol=1e-4)
    centred = fit_field(stack, cfg.replace(standardize=False))
    assert centred.config.standardize is False
    xyz = _plane(tissue, 90.0)
    truth = tissue.truth(xyz, centred.genes)
    assert _pearson(centred.predict(xyz), truth) > 0.8


def test_hash_grid_encoding_trains(aligned):
    stack, tissue = aligned
    model = fit_field(stack, FieldConfig(**{**QUICK, "encoding": HashGrid(levels=8, log2_table=13),
                                            "steps": 120}))
    xyz = _plane(tissue, 90.0)
    assert _pearson(tissue.truth(xyz, model.genes), model.predict(xyz)) > 0.6


@pytest.mark.parametrize("encoding", ["fourier", "hash"])
def test_network_compiles_as_one_graph_through_annealing(aligned, encoding):
    """torch.compile (used on CUDA) must not break the graph or recompile as the coarse-to-fine
    window opens: a branch on alpha's value once recompiled every step."""
    import torch._dynamo as dynamo

    from napari_inrst.field.data import StackData
    from napari_inrst.field.spec import ModelConfig

    stack, _ = aligned
    cfg = FieldConfig(**{**QUICK, "encoding": encoding})
    data = StackData(stack, cfg)
    net = ModelConfig.for_data(cfg, data).build()
    dynamo.reset()
    compiled = torch.compile(net, fullgraph=True, backend="eager")
    xyz = torch.from_numpy(data.xyz[:256])
    old = dynamo.config.error_on_recompile
    dynamo.config.error_on_recompile = True
    try:
        for a in (0.1, 0.5, 1.0):
            net.anneal(a)
            lat, pred, occ = compiled(xyz, xyz, decode=True)
            ref = net(xyz, xyz, decode=True)
            torch.testing.assert_close(pred, ref[1])
    finally:
        dynamo.config.error_on_recompile = old
        dynamo.reset()


def test_fast_pca_init_matches_the_exact_eigendecomposition():
    """The decoder's PCA start comes from randomized subspace iteration on the data (seconds at
    thousands of genes); on small data it equals the exact eigen-decomposition of the covariance."""
    from napari_inrst.field.networks import pca_init_decoder as _pca_init
    from napari_inrst.stack.linalg import top_components

    rng = np.random.default_rng(3)
    n, d, r = 900, 120, 6
    scales = np.array([9.0, 7.0, 5.0, 4.0, 3.0, 2.0])
    X = (rng.normal(size=(n, r)) * scales) @ np.linalg.qr(rng.normal(size=(d, r)))[0].T
    X = (X + 0.2 * rng.normal(size=(n, d)) + rng.normal(size=d)).astype(np.float32)
    Xc = X.astype(np.float64) - X.mean(0)
    ev, V = np.linalg.eigh(Xc.T @ Xc / n)
    ev, V = ev[::-1][:r], V[:, ::-1][:, :r]
    w, U = top_components(Xc, r, np.random.default_rng(0))
    np.testing.assert_allclose(w, ev, rtol=1e-6)
    np.testing.assert_allclose(np.abs(np.sum(U * V, axis=0)), 1.0, atol=1e-6)  # same axes (up to sign)

    net = torch.nn.Module()
    net.decoder = torch.nn.Linear(r, d)
    _pca_init(net, X, r, seed=0)
    W = net.decoder.weight.detach().double().numpy()
    W_exact = V * np.sqrt(ev)
    np.testing.assert_allclose(W @ W.T, W_exact @ W_exact.T, atol=1e-4 * ev[0])
    np.testing.assert_allclose(net.decoder.bias.detach().numpy(), X.mean(0), rtol=1e-5, atol=1e-6)


# --- issue 13: unit-free fits, the self-report against interpolation, the blend ---------------
#: small and quick, and with nothing in µm (wavelengths follow the data's own spacings)
TINY = dict(steps=120, batch_size=512, width=32, depth=2, rank=8, val_every=20, patience=3, threads=1,
            rc_pretrain_steps=30)


@pytest.fixture(scope="module")
def straight():
    """Six sections of the synthetic tissue as cut (not misplaced), 40 genes."""
    from napari_inrst.synthetic.sample import make_sample

    return make_sample(n_sections=6, missing=(), n_genes=40, misplace=False, spot_spacing=60.0)


def test_fit_is_unit_free(straight):
    """The same data in mm, µm or 1/100 µm give the same held-out scores (the network sees
    coordinates relative to the data's own spacings); array-unit spacing gets a warning."""
    from napari_inrst.field.data import spacing_of, unit_warning
    from napari_inrst.measure.metrics import pearson_per_gene
    from napari_inrst.stack import build_stack

    secs, tissue = straight
    z = [a.uns["z_um"] for a in secs]
    xy = tissue.spots(75.0, 60.0, np.random.default_rng(9))  # halfway between two sections
    xyz = np.column_stack([xy, np.full(len(xy), 75.0)])
    truth = tissue.truth(xyz)
    reports, scores = [], []
    for f in (0.001, 1.0, 100.0):
        st = build_stack(secs, z, unit_factor=f)
        m = fit_field(st, FieldConfig(**TINY))
        reports.append(m.validation)
        scores.append(pearson_per_gene(truth, m.predict(xyz * f)))
        assert (unit_warning(spacing_of(st.sections)) is not None) == (f == 0.001)  # 0.06 "µm" between spots
    for r in reports[1:]:
        for k in ("field", "network", "interpolation", "blend_weight"):
            assert abs(r[k] - reports[0][k]) < 0.01, (k, reports)
    assert max(scores) - min(scores) < 0.01, scores
    assert min(scores) > 0.8


def test_fit_reports_its_validation_against_interpolation(aligned, tmp_path):
    """A stack: validation on whole held-out interior sections, with 3D kNN scored on the same
    split (recomputed here from the measured data: the same number); one section: held-out spots
    against 2D kNN. The report is in the model file and in words."""
    from napari_inrst.field.data import holdout_positions
    from napari_inrst.field.report import describe, format_validation, validation_warning
    from napari_inrst.measure.baselines import adjacent, knn3d
    from napari_inrst.measure.metrics import pearson_per_gene

    stack, tissue = aligned
    m = fit_field(stack, FieldConfig(**TINY))
    v = m.validation
    assert v["task"] == "held-out sections" and v["baseline"] == "knn3d"
    pos = holdout_positions(stack.z)
    assert v["sections"] == [stack.names[p] for p in pos] and len(pos) == 2
    assert all(0 < np.argsort(np.argsort(stack.z))[p] < len(stack) - 1 for p in pos)  # interior only
    kept = [i for i in range(len(stack)) if i not in pos]
    q = np.concatenate([stack[p].xyz for p in pos])
    truth = np.concatenate([stack[p].X for p in pos])
    knn = knn3d(stack.coords(kept), stack.expression(kept), q)
    assert v["interpolation"] == pytest.approx(pearson_per_gene(truth, knn), abs=2e-3)
    # the adjacent-sections baseline on the same split (each held-out section midway between kept ones)
    sections = [(stack.z[i], stack[i].xyz[:, :2], stack[i].X) for i in kept]
    adj = np.concatenate([adjacent(sections, stack[p].xyz) for p in pos])
    assert v["interpolation_sections"] == pytest.approx(pearson_per_gene(truth, adj), abs=2e-3)
    # the blend weight is chosen on this split, so the field is at least the better of its two parts
    assert v["field"] >= max(v["network"], v["interpolant_stored"]) - 1e-4
    assert v["blend_mix"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert m.interp is None or m.interp.mix == v["blend_mix"]
    assert v["better"] == (v["field"] > max(v["interpolation"], v["interpolation_sections"]))
    line = format_validation(v)
    assert line.startswith("held-out sections (")
    assert f"field {v['field']:.2f}, interpolation {v['interpolation']:.2f}" in line
    assert (validation_warning(v) is None) == (v["better"] and v["blend_weight"] < 1)
    m.save(tmp_path / "m.inrst")
    m2 = load_model(tmp_path / "m.inrst")
    assert m2.validation == v
    text = describe(m2.meta())
    assert "genes: 60 (" in text and "section_04  z = 120 µm" in text and "validation: held-out sections" in text

    one = fit_field(stack, FieldConfig(**TINY), sections=[3])
    w = one.validation
    assert w["task"] == "held-out spots" and w["baseline"] == "knn2d" and w["sections"] == []
    assert format_validation(w).startswith(f"held-out spots ({w['n_cells']} spots): field ")
    assert validation_warning({**w, "field": 0.1, "interpolation": 0.3, "better": False}).startswith(
        "the field is not better than interpolation")


def test_blended_field_predicts_renders_and_saves_consistently(aligned, tmp_path):
    """(1 − w) · network + w · interpolant is one latent and one decoder: predict, latent/decode,
    the rendered plane and a reloaded file agree; w = 1 is exactly 3D kNN of the training data."""
    from napari_inrst.field.model import Interpolant
    from napari_inrst.measure.baselines import knn3d
    from napari_inrst.render.plane import plane_grid_for, render_plane

    stack, tissue = aligned
    m = fit_field(stack, FieldConfig(**TINY))
    n = int(m.net.decoder.weight.shape[1])
    X = stack.expression()
    Xs = (X - m.mean) / m.std
    G = Xs.shape[1]
    for w in (0.0, 0.4, 1.0):
        frame = stack.coords() - m.origin  # the network's frame
        m.interp = Interpolant(frame, Xs, np.eye(G), w) if w > 0 else None
        m._refresh_decoder()
        xyz = _plane(tissue, 90.0)[:300]
        lat = m.latent(xyz)
        assert lat.shape[1] == n + (G if w > 0 else 0) == m.rank
        pred = m.predict(xyz)
        np.testing.assert_allclose(m.decode(lat), pred, rtol=1e-5, atol=1e-5)
        net_only = m.net.decoder(torch.from_numpy(m._run(m.net.latent, xyz))).detach().numpy() * m.std + m.mean
        expect = (1 - w) * net_only + w * knn3d(stack.coords(), X, xyz)
        if m.value_floor is not None:
            expect = np.maximum(expect, m.value_floor)
        np.testing.assert_allclose(pred, expect, rtol=1e-4, atol=1e-4)
    grid = plane_grid_for(m, 90.0, shape=48)
    img = render_plane(m, [0, 5], 90.0, shape=48, masked=False)
    np.testing.assert_allclose(img.reshape(2, -1).T, m.predict(grid.points(), [0, 5]), rtol=1e-4, atol=1e-4)
    m.save(tmp_path / "b.inrst")
    np.testing.assert_array_equal(load_model(tmp_path / "b.inrst").predict(xyz), m.predict(xyz))
