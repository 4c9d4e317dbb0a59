"""``napari-inrst fit | predict | transforms`` as external scripts call them."""

import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")

from napari_inrst.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def sample_files(tmp_path_factory):
    """Four aligned synthetic sections (40 genes) as .h5ad files + the tissue."""
    from napari_inrst.synthetic.sample import make_sample

    d = tmp_path_factory.mktemp("sections")
    sections, tissue = make_sample(n_genes=40, misplace=False)
    paths, zs = [], []
    for a in sections[:4]:
        p = d / f"s{int(a.uns['z_um']):03d}.h5ad"
        a.write_h5ad(p)
        paths.append(str(p))
        zs.append(str(a.uns["z_um"]))
    return paths, zs, tissue


@pytest.fixture(scope="module")
def fitted(sample_files, tmp_path_factory):
    paths, zs, tissue = sample_files
    out = tmp_path_factory.mktemp("model") / "m.inrst"
    rc = main(["fit", *paths, "--z", *zs, "--out", str(out), "--steps", "80", "--no-align", "--seed", "3",
               "--quiet"])
    assert rc == 0 and out.exists()
    return out


def test_fit_predict_round_trip_in_order(fitted, sample_files, tmp_path):
    _, _, tissue = sample_files
    rng = np.random.default_rng(0)
    xy = tissue.spots(45.0, 80.0, rng)[:50]
    q = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "z": np.full(len(xy), 45.0)})
    qp, pp = tmp_path / "q.csv", tmp_path / "p.csv"
    q.to_csv(qp, index=False)
    assert main(["predict", str(fitted), "--coords", str(qp), "--out", str(pp)]) == 0
    pred = pd.read_csv(pp)
    assert len(pred) == len(q)
    assert list(pred.columns) == list(tissue.genes)  # every gene (40 < 500: all kept), in order
    truth = tissue.truth(q[["x", "y", "z"]].to_numpy(), list(pred.columns))
    # rows follow the queries: row-wise correlation with the truth at the same point beats a shuffled pairing
    p = pred.to_numpy()
    same = np.mean([np.corrcoef(p[i], truth[i])[0, 1] for i in range(len(p))])
    shifted = np.mean([np.corrcoef(p[i], truth[(i + 17) % len(p)])[0, 1] for i in range(len(p))])
    assert same > shifted + 0.02
    # reversed queries give reversed rows
    q.iloc[::-1].to_csv(qp, index=False)
    assert main(["predict", str(fitted), "--coords", str(qp), "--out", str(pp)]) == 0
    np.testing.assert_allclose(pd.read_csv(pp).to_numpy()[::-1], p, rtol=1e-4, atol=1e-5)


def test_transforms_prints_json_in_input_order(fitted, sample_files, capsys):
    paths, _, _ = sample_files
    assert main(["transforms", str(fitted)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [t["section"] for t in out] == [p.rsplit("/", 1)[1][:-5] for p in paths]
    for t in out:  # --no-align: identity
        np.testing.assert_allclose(np.array(t["matrix"]), np.eye(3))


def test_single_section_fit_is_valid(sample_files, tmp_path):
    paths, _, _ = sample_files
    out = tmp_path / "one.inrst"
    assert main(["fit", paths[0], "--z", "0", "--out", str(out), "--steps", "20", "--quiet"]) == 0
    from napari_inrst.field.model import load_model

    m = load_model(out)
    assert m.stack_meta["z"] == [0.0] and np.isfinite(m.predict([[1000.0, 700.0, 0.0]])).all()


def test_fit_takes_z_from_the_files_when_no_z_is_given(sample_files, tmp_path, capsys):
    """The sample files record uns['z_um']; without --z the fit uses those, as the napari reader does."""
    import anndata as ad

    paths, zs, _ = sample_files
    out = tmp_path / "z.inrst"
    assert main(["fit", *paths[:2], "--out", str(out), "--steps", "10", "--no-align", "--quiet"]) == 0
    from napari_inrst.field.model import load_model

    assert load_model(out).stack_meta["z"] == [float(z) for z in zs[:2]]
    # a file that records no z: one line naming it, nothing written
    a = ad.read_h5ad(paths[1])
    del a.uns["z_um"]
    bare = tmp_path / "bare.h5ad"
    a.write_h5ad(bare)
    out2 = tmp_path / "z2.inrst"
    assert main(["fit", paths[0], str(bare), "--out", str(out2), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "bare.h5ad" in err and "--z" in err and not out2.exists()


def test_fit_caps_genes(sample_files, tmp_path):
    from napari_inrst.field.model import load_model

    paths, zs, _ = sample_files
    out = tmp_path / "g.inrst"
    assert main(["fit", *paths[:2], "--z", *zs[:2], "--out", str(out), "--steps", "20", "--genes", "12",
                 "--no-align", "--quiet"]) == 0
    assert len(load_model(out).genes) == 12


def test_bad_input_exits_2_and_writes_nothing(fitted, sample_files, tmp_path, capsys):
    paths, zs, _ = sample_files
    out = tmp_path / "never.inrst"
    assert main(["fit", *paths, "--z", "0", "--out", str(out), "--quiet"]) == 2  # z count mismatch
    assert not out.exists()
    bad_q = tmp_path / "q.csv"
    bad_q.write_text("x,y\n1,2\n")
    p = tmp_path / "p.csv"
    assert main(["predict", str(fitted), "--coords", str(bad_q), "--out", str(p)]) == 2
    assert "missing z" in capsys.readouterr().err and not p.exists()
    bad_q.write_text("x,y,z\n1,2,nan\n")
    assert main(["predict", str(fitted), "--coords", str(bad_q), "--out", str(p)]) == 2
    junk = tmp_path / "junk.inrst"
    junk.write_bytes(b"\x00" * 100)
    assert main(["transforms", str(junk)]) == 2
    assert "junk.inrst" in capsys.readouterr().err


@pytest.fixture(scope="module")
def misplaced_files(tmp_path_factory):
    """Three adjacent synthetic sections as placed on the slides (the middle one unmoved), with
    their true transforms kept aside (not in the files)."""
    from napari_inrst.synthetic.sample import make_sample

    d = tmp_path_factory.mktemp("misplaced")
    sections, _ = make_sample(n_genes=60)
    paths, zs, truth = [], [], []
    for a in sections[3:6]:
        b = a.copy()
        truth.append(np.asarray(b.uns.pop("truth_matrix")))
        b.uns.pop("mirrored")
        p = d / f"s{int(a.uns['z_um']):03d}.h5ad"
        b.write_h5ad(p)
        paths.append(str(p))
        zs.append(str(a.uns["z_um"]))
    assert np.allclose(truth[1], np.eye(3)) and not np.allclose(truth[0], np.eye(3))
    return paths, zs, truth, [np.asarray(a.obsm["spatial"]) for a in sections[3:6]]


@pytest.mark.parametrize("reference", [None, 0])
def test_fit_aligns_by_default_and_the_model_keeps_the_transforms(misplaced_files, tmp_path, capsys, reference):
    """``fit`` aligns unless --no-align (reference: the middle section, or --reference K), the
    model stores the transforms, and ``transforms MODEL`` prints them in input order."""
    paths, zs, truth, xys = misplaced_files
    out = tmp_path / "m.inrst"
    extra = [] if reference is None else ["--reference", str(reference)]
    assert main(["fit", *paths, "--z", *zs, "--out", str(out), "--steps", "20", "--quiet", *extra]) == 0
    capsys.readouterr()
    assert main(["transforms", str(out)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["section"] for r in rows] == [p.rsplit("/", 1)[1][:-5] for p in paths]
    ref = 1 if reference is None else reference
    np.testing.assert_allclose(rows[ref]["matrix"], np.eye(3))
    from napari_inrst.stack import apply_transform

    for r, t, x in zip(rows, truth, xys):
        expected = np.linalg.inv(truth[ref]) @ t  # section → the reference's frame
        err = np.linalg.norm(apply_transform(np.array(r["matrix"]), x) - apply_transform(expected, x), axis=1)
        assert err.mean() < 20.0, (r["section"], err.mean())  # µm; spots 50 µm apart


def test_output_piped_into_head_is_not_an_error(fitted):
    """`napari-inrst transforms m.inrst | head -1`: the closed pipe ends the command quietly (here
    the reader, `true`, has gone before the command writes at all)."""
    import subprocess
    import sys

    cmd = f'"{sys.executable}" -m napari_inrst.cli transforms "{fitted}" | true'
    r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr


def test_info_describes_the_model_and_its_validation_against_interpolation(fitted, sample_files, tmp_path, capsys):
    paths, zs, _ = sample_files
    capsys.readouterr()
    assert main(["info", str(fitted)]) == 0
    out = capsys.readouterr().out
    assert "genes: 40 (" in out and "sections: 4" in out
    for z in zs:
        assert f"z = {float(z):g} µm" in out
    assert "config: encoding=fourier" in out
    from napari_inrst.field.model import load_model

    v = load_model(fitted).validation
    assert f"validation: held-out sections ({', '.join(v['sections'])}): field {v['field']:.2f}, " \
           f"interpolation {v['interpolation']:.2f} (3D kNN)" in out
    bad = tmp_path / "bad.inrst"
    bad.write_bytes(b"not a model")
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("napari-inrst: error: ") and "bad.inrst" in err[0]


def test_fit_says_how_it_did_against_interpolation_and_warns_on_array_units(sample_files, tmp_path, capsys):
    """The final line names the validation task and both scores; coordinates 0.01 × µm (spots
    0.5 apart) get the one-line --unit-factor warning, and the fit is the same as in µm."""
    paths, _, _ = sample_files
    out = tmp_path / "one.inrst"
    capsys.readouterr()
    assert main(["fit", paths[1], "--z", "0", "--out", str(out), "--steps", "20", "--unit-factor", "0.01"]) == 0
    err = capsys.readouterr().err
    assert sum("--unit-factor" in line and "warning" in line for line in err.splitlines()) == 1
    last = [line for line in err.splitlines() if line.startswith("wrote ")][-1]
    assert "held-out spots (" in last and "field " in last and "interpolation " in last and "(2D kNN)" in last
