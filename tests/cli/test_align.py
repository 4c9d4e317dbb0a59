"""``napari-inrst align``: JSON on stdout or in --out, exit code 2 and nothing written on bad input."""

import json

import numpy as np
import pytest

from napari_inrst.cli import main
from napari_inrst.synthetic.sample import make_sample
from napari_inrst.stack import apply_transform


@pytest.fixture(scope="module")
def two_sections(tmp_path_factory):
    """Two adjacent synthetic sections (the second misplaced) as .h5ad, with their truth."""
    d = tmp_path_factory.mktemp("secs")
    secs, _ = make_sample(n_sections=2, missing=(), mirror=None, seed=3)
    paths = []
    for i, a in enumerate(secs):
        p = d / f"s{i}.h5ad"
        b = a.copy()
        del b.uns["truth_matrix"]
        b.write_h5ad(p)
        paths.append(str(p))
    return paths, [np.asarray(a.uns["truth_matrix"]) for a in secs], secs


def test_align_prints_json_in_input_order(two_sections, capsys):
    paths, truth, secs = two_sections
    assert np.allclose(truth[1], np.eye(3))  # the reference n//2 = 1 is the unmoved one
    rc = main(["align", *paths, "--z", "0", "30", "--quiet"])
    assert rc == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["section"] for r in rows] == ["s0", "s1"]
    assert rows[1]["matrix"] == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    M = np.array(rows[0]["matrix"])
    assert M.shape == (3, 3) and M[2].tolist() == [0.0, 0.0, 1.0]
    x = np.asarray(secs[0].obsm["spatial"])
    err = np.linalg.norm(apply_transform(M, x) - apply_transform(truth[0], x), axis=1).mean()
    assert err < 20  # µm; spots 50 µm apart


def test_align_out_file_reference_and_method(two_sections, tmp_path, capsys):
    paths, _, _ = two_sections
    out = tmp_path / "t.json"
    rc = main(["align", *paths, "--reference", "0", "--method", "none", "--out", str(out), "--quiet"])
    assert rc == 0 and capsys.readouterr().out == ""
    rows = json.loads(out.read_text())
    assert all(np.allclose(r["matrix"], np.eye(3)) for r in rows)


@pytest.mark.parametrize("extra,msg", [
    (["--reference", "2"], "reference section 2 is out of range"),
])
def test_align_bad_reference_exit_2_nothing_written(two_sections, tmp_path, capsys, extra, msg):
    paths, _, _ = two_sections
    out = tmp_path / "t.json"
    assert main(["align", *paths, "--out", str(out), *extra]) == 2
    assert msg in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_align_too_few_spots_or_sections_exit_2(make_section, tmp_path, capsys):
    good, small = make_section(n=30, seed=1), make_section(n=6, seed=2)
    pg, ps = tmp_path / "good.h5ad", tmp_path / "small.h5ad"
    good.write_h5ad(pg)
    small.write_h5ad(ps)
    out = tmp_path / "out" / "t.json"
    assert main(["align", str(pg), str(ps), "--out", str(out)]) == 2
    assert "small" in capsys.readouterr().err and not out.exists()
    assert main(["align", str(pg), "--out", str(out)]) == 2
    assert "at least 2 sections" in capsys.readouterr().err and not out.exists()
