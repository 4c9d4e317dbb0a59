"""``napari-inrst map MODEL --section K --coords IN.csv --out OUT.csv`` as external scripts call it,
and ``fit``'s refinement switch (--no-refine) and storage."""

import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")

from napari_inrst.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def moved(tmp_path_factory):
    """Three synthetic sections (30 genes) moved by known rigid motions (one mirrored), as .h5ad files
    with coordinates in mm (unit factor 1000), and a model fitted by the CLI with --no-refine."""
    from napari_inrst.synthetic.sample import make_sample

    d = tmp_path_factory.mktemp("moved")
    sections, tissue = make_sample(n_sections=3, missing=(), n_genes=30, spot_spacing=80.0)
    paths, zs = [], []
    for a in sections:
        a = a.copy()
        a.obsm["spatial"] = np.asarray(a.obsm["spatial"]) / 1000.0  # mm on disk
        a.uns["z_um"] = a.uns["z_um"] / 1000.0
        p = d / f"sec{int(round(a.uns['z_um'] * 1000)):03d}.h5ad"
        a.write_h5ad(p)
        paths.append(str(p))
    out = d / "m.inrst"
    rc = main(["fit", *paths, "--unit-factor", "1000", "--out", str(out), "--steps", "20", "--no-refine",
               "--seed", "0", "--quiet"])
    assert rc == 0 and out.exists()
    return paths, sections, tissue, out


def _map(model, section, xy, tmp_path, name="in.csv"):
    src, dst = tmp_path / name, tmp_path / "out.csv"
    pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1]}).to_csv(src, index=False)
    rc = main(["map", str(model), "--section", str(section), "--coords", str(src), "--out", str(dst)])
    assert rc == 0
    return pd.read_csv(dst)


def test_map_puts_each_section_where_the_truth_is(moved, tmp_path):
    """Each moved section's own file coordinates → the stack frame, compared with the known motions."""
    from napari_inrst.field.model import load_model
    from napari_inrst.stack import apply_transform

    paths, sections, tissue, model_path = moved
    model = load_model(model_path)
    assert "refinement" not in model.stack_meta  # --no-refine
    for k, a in enumerate(sections):
        xy_file = np.asarray(a.obsm["spatial"]) / 1000.0
        out = _map(model_path, k, xy_file, tmp_path)
        assert list(out.columns) == ["x", "y", "z"] and len(out) == len(xy_file)
        truth = apply_transform(a.uns["truth_matrix"], np.asarray(a.obsm["spatial"]))
        err = np.linalg.norm(out[["x", "y"]].to_numpy() - truth, axis=1).mean()
        assert err < 0.04 * tissue.width, (k, err)  # the rigid alignment's accuracy here (≤ 56 µm), through map
        M = np.asarray(model.stack_meta["transforms"][k])
        np.testing.assert_allclose(out[["x", "y"]].to_numpy(), (xy_file * 1000.0) @ M[:2, :2].T + M[:2, 2], atol=1e-6)
        np.testing.assert_allclose(out["z"], a.uns["z_um"])
        by_name = _map(model_path, model.stack_meta["names"][k], xy_file, tmp_path)
        pd.testing.assert_frame_equal(by_name, out)


def test_map_applies_the_stored_transform_exactly_in_row_order(moved, tmp_path):
    from napari_inrst.field.model import load_model
    from napari_inrst.synthetic.sample import rigid_matrix

    _, sections, _, model_path = moved
    model = load_model(model_path)
    known = [rigid_matrix(17.0, (120.0, -45.0), mirror=True, center=(300.0, 200.0)),
             np.eye(3), rigid_matrix(-8.0, (3.5, 7.25))]
    model.stack_meta["transforms"] = [m.tolist() for m in known]
    path = tmp_path / "known.inrst"
    model.save(path)
    rng = np.random.default_rng(1)
    xy = rng.uniform(-1.0, 2.0, (37, 2))  # mm, the section file's unit
    out = _map(path, 0, xy, tmp_path).to_numpy()
    M = known[0]
    expect = (xy * 1000.0) @ M[:2, :2].T + M[:2, 2]
    np.testing.assert_allclose(out[:, :2], expect, atol=1e-6)
    np.testing.assert_allclose(out[:, 2], model.stack_meta["z"][0])
    rev = _map(path, 0, xy[::-1], tmp_path).to_numpy()
    np.testing.assert_allclose(rev[::-1], out, atol=1e-9)
    # transforms prints the same matrices
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["transforms", str(path)]) == 0
    printed = json.loads(buf.getvalue())
    for row, m in zip(printed, known):
        np.testing.assert_allclose(row["matrix"], m)


@pytest.mark.parametrize("case", ["unknown-name", "index-out-of-range", "missing-column", "not-a-number",
                                  "missing-file", "empty-file", "bad-model"])
def test_map_bad_input_is_one_line_and_writes_nothing(moved, tmp_path, capsys, case):
    _, _, _, model_path = moved
    good = tmp_path / "good.csv"
    good.write_text("x,y\n1,2\n3,4\n")
    section, coords, model = "0", good, model_path
    if case == "unknown-name":
        section = "no_such_section"
    elif case == "index-out-of-range":
        section = "3"
    elif case == "missing-column":
        coords = tmp_path / "bad.csv"
        coords.write_text("x,z\n1,2\n")
    elif case == "not-a-number":
        coords = tmp_path / "bad.csv"
        coords.write_text("x,y\n1,2\n3,abc\n")
    elif case == "missing-file":
        coords = tmp_path / "absent.csv"
    elif case == "empty-file":
        coords = tmp_path / "bad.csv"
        coords.write_text("")
    elif case == "bad-model":
        model = tmp_path / "m.inrst"
        model.write_bytes(b"not a model at all")
    out = tmp_path / "out.csv"
    capsys.readouterr()
    rc = main(["map", str(model), "--section", section, "--coords", str(coords), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("napari-inrst: error:") and "\n" not in err, err
    assert not out.exists()
    if case == "not-a-number":
        assert "row 3" in err and str(coords) in err
    if case in ("unknown-name", "index-out-of-range"):
        assert "sec000" in err  # lists the sections it has


def test_fit_refines_by_default_and_stores_the_result(moved, tmp_path, monkeypatch):
    """Without --no-refine, fit runs the refinement and stores its report and transforms (the
    wiring, not the optimization, which test_refine.py checks)."""
    import napari_inrst.field.refine as refine
    from napari_inrst.field.model import load_model

    real = refine.refine_stack
    calls = []

    def quick(stack, cfg, **kw):
        calls.append(dict(kw))
        kw.update(rounds=0, field_steps=10, max_cells=200)
        return real(stack, cfg, **kw)

    monkeypatch.setattr(refine, "refine_stack", quick)
    paths, _, _, base = moved
    out = tmp_path / "r.inrst"
    assert main(["fit", *paths, "--unit-factor", "1000", "--out", str(out), "--steps", "20", "--seed", "0",
                 "--quiet"]) == 0
    assert len(calls) == 1 and calls[0]["field_steps"] == 20  # never longer than the final fit (--steps 20)
    m, b = load_model(out), load_model(base)
    info = m.stack_meta["refinement"]
    # three sections: none lies between two sections of the other half, so none can be placed
    # (and no half field is fitted); the rigid start is kept
    assert info["kept"] is False and info["scores"] == []
    np.testing.assert_allclose(m.stack_meta["transforms"], b.stack_meta["transforms"], atol=1e-9)
    np.testing.assert_allclose(info["initial_transforms"], b.stack_meta["transforms"], atol=1e-9)
