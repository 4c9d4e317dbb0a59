"""``napari-inrst evaluate``: table + JSON, bad input → exit 2, nothing half-written."""

import json

import numpy as np
import pytest

from napari_inrst.cli import main


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from napari_inrst.synthetic.sample import write_sample

    d = tmp_path_factory.mktemp("synth")
    paths = write_sample(d, misplace=False, n_genes=40, spot_spacing=80.0)
    z = [float(p.stem.split("_")[1]) * 30.0 for p in paths]
    return [str(p) for p in paths], [str(v) for v in z]


def _truth_fit_fn(config=None, **kw):
    """Stand-in for the INR: the sample's analytic truth (what a perfect field would predict)."""
    from napari_inrst.evaluate.fitting import FieldPredictor
    from napari_inrst.field.api import TruthField
    from napari_inrst.synthetic.sample import SyntheticTissue

    def fit(stack, sections):
        tissue = SyntheticTissue(n_genes=40, depth=270.0, seed=0)
        return FieldPredictor(TruthField(tissue), stack.genes)

    return fit


def test_evaluate_prints_table_and_writes_json(synth, tmp_path, capsys, monkeypatch):
    import napari_inrst.evaluate.fitting as proto

    monkeypatch.setattr(proto, "inr_fit_fn", _truth_fit_fn)
    paths, z = synth
    out = tmp_path / "res.json"
    rc = main(["evaluate", *paths, "--z", *z, "--holdout", "3", "5", "--no-align", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    for word in ("inr", "knn3d", "adjacent", "pearson", "rmse", "ssim", "fit_seconds"):
        assert word in text
    res = json.loads(out.read_text())
    assert res["holdout"] == ["section_04", "section_06"]
    assert set(res["methods"]) == {"inr", "knn3d", "adjacent"}
    assert set(res["methods"]["inr"]["per_section"]) == {"section_04", "section_06"}
    # the analytic truth beats interpolation on held-out sections
    assert res["methods"]["inr"]["pearson"] > res["methods"]["knn3d"]["pearson"]
    assert res["methods"]["inr"]["rmse"] < res["methods"]["adjacent"]["rmse"]
    # the printed table carries the JSON's numbers
    assert f"{res['methods']['knn3d']['pearson']:.3f}" in text


def test_fit_options_reach_the_field_trainer(synth, tmp_path, monkeypatch):
    """--steps/--device/--seed configure the real trainer, which sees only the kept sections."""
    import napari_inrst.field.fit as train

    seen = {}

    def fake_fit_field(stack, config=None, *, sections=None, **kw):
        seen.update(steps=config.steps, device=config.device, seed=config.seed, sections=list(sections))
        return _truth_fit_fn()(stack, sections)

    monkeypatch.setattr(train, "fit_field", fake_fit_field)
    paths, z = synth
    rc = main(["evaluate", *paths, "--z", *z, "--holdout", "4", "--no-align", "--steps", "77",
               "--device", "cpu", "--seed", "5", "--json", str(tmp_path / "o.json")])
    assert rc == 0
    assert seen == {"steps": 77, "device": "cpu", "seed": 5, "sections": [0, 1, 2, 3, 5, 6, 7]}


def test_genes_and_alignment_options_pass_through(synth, tmp_path, monkeypatch):
    """--genes N models N genes (as `fit` does); --reference K aligns to K; --no-align skips it."""
    import napari_inrst.cli.evaluate as ev
    import napari_inrst.field.fit as train

    seen = {}

    def fake_fit_field(stack, config=None, *, sections=None, **kw):
        seen["n_genes"] = stack.n_genes
        return _truth_fit_fn()(stack, sections)

    def fake_align(stack, reference=None, log=print):
        seen.setdefault("align", []).append(reference)

    monkeypatch.setattr(train, "fit_field", fake_fit_field)
    monkeypatch.setattr(ev, "align_if_available", fake_align)
    paths, z = synth
    out = tmp_path / "o.json"
    assert main(["evaluate", *paths, "--z", *z, "--holdout", "4", "--genes", "12", "--reference", "1",
                 "--json", str(out)]) == 0
    assert seen == {"n_genes": 12, "align": [1]}
    assert json.loads(out.read_text())["genes_scored"] == 12  # baselines scored on the same genes
    seen.clear()
    assert main(["evaluate", *paths, "--z", *z, "--holdout", "4", "--no-align", "--json", str(out)]) == 0
    assert "align" not in seen and seen["n_genes"] == 40


def _parse_table(text: str, first: str = "method") -> dict:
    """The printed methods × metrics table back into {method: {metric: str}}."""
    lines = text.splitlines()
    k = next(i for i, ln in enumerate(lines) if ln.split()[:1] == [first])
    head = lines[k].split()
    out = {}
    for ln in lines[k + 2:]:
        cells = ln.split()
        if len(cells) != len(head):
            break
        out[cells[0]] = dict(zip(head[1:], cells[1:]))
    return out


def test_each_holds_sections_out_one_at_a_time_and_table_equals_json(synth, tmp_path, capsys, monkeypatch):
    """--each: one fit per held-out section (EVALUATION.md's protocol), averaged; every number of
    the printed tables is the JSON's, rounded."""
    import napari_inrst.field.fit as train

    fits = []

    def fake_fit_field(stack, config=None, *, sections=None, **kw):
        fits.append(list(sections))
        return _truth_fit_fn()(stack, sections)

    monkeypatch.setattr(train, "fit_field", fake_fit_field)
    paths, z = synth
    out = tmp_path / "e.json"
    rc = main(["evaluate", *paths, "--z", *z, "--holdout", "2", "5", "--each", "--no-align", "--json", str(out)])
    assert rc == 0
    assert fits == [[0, 1, 3, 4, 5, 6, 7], [0, 1, 2, 3, 4, 6, 7]]  # one section out per fit
    res = json.loads(out.read_text())
    text = capsys.readouterr().out
    per = res["methods"]["inr"]["per_section"]
    assert set(per) == {"section_02", "section_06"}  # input indices 2 and 5
    assert res["methods"]["inr"]["pearson"] == pytest.approx(np.mean([v["pearson"] for v in per.values()]))
    assert res["hardware"] in text and "each held out in turn" in text
    table = _parse_table(text)
    assert set(table) == set(res["methods"]) == {"inr", "knn3d", "adjacent"}
    for m, row in table.items():
        for metric, cell in row.items():
            assert cell == f"{res['methods'][m][metric]:.3f}", (m, metric)
    # the per-section table below it
    lines = text.splitlines()
    k = next(i for i, ln in enumerate(lines) if ln.startswith("section "))
    head = lines[k].split()
    rows = [ln.split() for ln in lines[k + 2:] if len(ln.split()) == len(head)]
    assert len(rows) == 2 * 3
    for r in rows:
        for metric, cell in zip(head[2:], r[2:]):
            assert cell == f"{res['methods'][r[1]]['per_section'][r[0]][metric]:.3f}"
    # without --each the two are held out together: one fit without both
    fits.clear()
    assert main(["evaluate", *paths, "--z", *z, "--holdout", "2", "5", "--no-align", "--json", str(out)]) == 0
    assert fits == [[0, 1, 3, 4, 6, 7]]


def test_missing_spots_predicts_removed_spots_from_the_rest_of_each_section(synth, tmp_path, capsys,
                                                                           monkeypatch):
    """--missing-spots: half of each named section's spots removed, one fit per section on its kept
    spots only, scored against knn2d; every section may be named (each keeps half its spots)."""
    import anndata as ad

    import napari_inrst.field.fit as train

    fits = []

    def fake_fit_field(stack, config=None, *, sections=None, **kw):
        fits.append((list(sections), [stack[i].n_obs for i in sections]))
        return _truth_fit_fn()(stack, sections)

    monkeypatch.setattr(train, "fit_field", fake_fit_field)
    paths, z = synth
    out = tmp_path / "spots.json"
    every = [str(i) for i in range(len(paths))]
    rc = main(["evaluate", *paths, "--z", *z, "--holdout", *every, "--missing-spots", "0.5",
               "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert "missing spots (50% removed, seed 0)" in res["task"] and "50% of the spots" in text
    assert set(res["methods"]) == {"inr", "knn2d"}
    n = [ad.read_h5ad(p).n_obs for p in paths]
    names = [f"section_{p.split('section_')[1][:2]}" for p in paths]
    assert res["holdout"] == names
    assert res["n_removed"] == {nm: int(round(0.5 * k)) for nm, k in zip(names, n)}
    # one fit per section, on that section alone, with only its kept spots
    assert fits == [([i], [k - int(round(0.5 * k))]) for i, k in enumerate(n)]
    assert set(res["methods"]["inr"]["per_section"]) == set(names)
    # the analytic truth beats 2D interpolation of the kept spots
    assert res["methods"]["inr"]["pearson"] > res["methods"]["knn2d"]["pearson"]
    assert res["methods"]["inr"]["rmse"] < res["methods"]["knn2d"]["rmse"]


def test_log1p_values_is_discoverable_and_checked(synth, tmp_path, capsys, make_section):
    from napari_inrst.cli import build_parser
    from napari_inrst.cli.evaluate import _looks_unlogged
    from napari_inrst.stack import build_stack

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    helptext = sub.choices["evaluate"].format_help()
    assert "--log1p-values" in helptext and "--normalize none --log1p-values" in helptext
    assert "--each" in helptext and "--labels Region" in helptext  # the reference example
    paths, z = synth
    rc = main(["evaluate", *paths, "--z", *z, "--holdout", "2", "--log1p-values", "--baselines-only", "--no-align"])
    assert rc == 2 and "--normalize none" in capsys.readouterr().err
    # values spanning orders of magnitude (normalized upstream, not logged) get the hint
    a = make_section(n=200, counts=False)
    a.X = np.exp(np.random.default_rng(0).normal(0, 2.0, a.X.shape)).astype(np.float32)
    st = build_stack([a], [0.0], normalize="none")
    assert _looks_unlogged(st)
    a.X = np.log1p(a.X)
    assert not _looks_unlogged(build_stack([a], [0.0], normalize="none"))


def test_evaluate_with_labels_reports_ari(synth, tmp_path, capsys):
    import anndata as ad

    paths, z = synth
    lab = []
    for p in paths:  # label each spot by a half of the tissue
        a = ad.read_h5ad(p)
        a.obs["half"] = np.where(a.obsm["spatial"][:, 0] > 1000, "east", "west")
        q = tmp_path / p.split("/")[-1]
        a.write_h5ad(q)
        lab.append(str(q))
    out = tmp_path / "r.json"
    rc = main(["evaluate", *lab, "--z", *z, "--holdout", "2", "--labels", "half", "--no-align",
               "--baselines-only", "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["methods"]["knn3d"]["ari"] > 0.5 and "ari" in capsys.readouterr().out


@pytest.mark.parametrize("extra, needle", [
    (["--holdout", "8"], "out of range"),
    (["--holdout", "-1"], "out of range"),
    (["--holdout", *map(str, range(8))], "all 8 sections"),
    (["--holdout", "2", "--labels", "nope"], "nope"),
    (["--holdout", "2", "--score-genes", "many"], "--score-genes"),
    (["--holdout", "2", "--steps", "0"], "--steps"),
    (["--holdout", "2", "--missing-spots", "1.5"], "--missing-spots"),
    (["--holdout", "2", "--missing-spots", "0.5", "--labels", "Region"], "--labels"),
])
def test_bad_input_exits_2_and_writes_nothing(synth, tmp_path, capsys, extra, needle):
    paths, z = synth
    out = tmp_path / "never.json"
    rc = main(["evaluate", *paths, "--z", *z, "--no-align", "--baselines-only", "--json", str(out), *extra])
    assert rc == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_evaluate_on_merfish_reproduces_reference_baselines(merfish_dir, tmp_path):
    """EVALUATION.md's reference figures (middle section held out, log1p values)."""
    files = sorted(str(p) for p in merfish_dir.glob("section_*.h5ad"))
    out = tmp_path / "m.json"
    rc = main(["evaluate", *files, "--z", "40", "90", "140", "190", "240", "--normalize", "none",
               "--log1p-values", "--holdout", "2", "--no-align", "--baselines-only", "--json", str(out)])
    assert rc == 0
    m = json.loads(out.read_text())["methods"]
    got = [round(m[k][f], 3) for k in ("knn3d", "adjacent") for f in ("pearson", "pearson_50um", "pearson_100um")]
    assert got == [0.152, 0.288, 0.450, 0.161, 0.295, 0.456]
