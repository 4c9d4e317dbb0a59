"""``fit --deform``, ``align --method nonrigid`` and ``map`` with stored deformations (issue 14)."""

import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")

from napari_inrst.cli import main


@pytest.fixture(scope="module")
def sections(tmp_path_factory):
    from napari_inrst.synthetic.sample import make_sample

    d = tmp_path_factory.mktemp("deform")
    secs, _ = make_sample(n_sections=4, missing=(), n_genes=30, spot_spacing=90.0, mirror=None, seed=2)
    paths = []
    for i, a in enumerate(secs):
        p = d / f"s{i}.h5ad"
        a.write_h5ad(p)
        paths.append(str(p))
    return d, paths, secs


def test_fit_deform_round_trip_through_map(sections, tmp_path):
    """fit --deform writes a model whose refinement says so; map applies exactly what the model
    stores (unit factor, deformation when kept, transform, z); transforms prints the affine part."""
    from napari_inrst.align.deform import deformations_from_meta
    from napari_inrst.field.model import load_model

    _, paths, secs = sections
    out = tmp_path / "m.inrst"
    rc = main(["fit", *paths, "--z", "0", "30", "60", "90", "--out", str(out), "--steps", "16", "--deform",
               "--seed", "0", "--quiet"])
    assert rc == 0
    model = load_model(out)
    ref = model.stack_meta["refinement"]
    assert ref["settings"]["deform"] is True and len(ref["deformation"]) == 4
    defs = deformations_from_meta(model.stack_meta, out)
    assert defs == [] or len(defs) == 4  # stored only when a kept round has grids
    xy = np.asarray(secs[1].obsm["spatial"])[:50]
    pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1]}).to_csv(tmp_path / "in.csv", index=False)
    assert main(["map", str(out), "--section", "1", "--coords", str(tmp_path / "in.csv"),
                 "--out", str(tmp_path / "o.csv")]) == 0
    got = pd.read_csv(tmp_path / "o.csv").to_numpy()
    M = np.asarray(model.stack_meta["transforms"][1])
    src = defs[1].apply(xy) if defs and defs[1] is not None else xy
    assert np.allclose(got[:, :2], src @ M[:2, :2].T + M[:2, 2]) and np.allclose(got[:, 2], 30.0)


def test_model_stores_the_deformations_it_was_trained_with(sections, tmp_path):
    """A stack carrying grids → the saved model records them; map applies them."""
    from napari_inrst.align.deform import Deformation, deformations_from_meta, set_deformations
    from napari_inrst.field import FieldConfig
    from napari_inrst.field.model import load_model
    from napari_inrst.field.fit import fit_field
    from napari_inrst.stack import build_stack

    *_, secs = sections
    stack = build_stack([a.copy() for a in secs[:2]], [0.0, 30.0], names=["a", "b"])
    g = Deformation.for_points(stack[1].xy_input)
    g.coef[..., 0] = np.linspace(-1, 1, g.shape[1])[None, :] * 0.5 * g.max_disp_um  # a shear
    set_deformations(stack, [None, g])
    model = fit_field(stack, FieldConfig(steps=4, val_every=2, checkpoint_every=0))
    model.save(tmp_path / "m.inrst")
    back = deformations_from_meta(load_model(tmp_path / "m.inrst").stack_meta)
    assert back[0] is None and np.array_equal(back[1].coef, g.coef)
    xy = stack[1].xy_input[:20]
    pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1]}).to_csv(tmp_path / "in.csv", index=False)
    assert main(["map", str(tmp_path / "m.inrst"), "--section", "b", "--coords", str(tmp_path / "in.csv"),
                 "--out", str(tmp_path / "o.csv")]) == 0
    got = pd.read_csv(tmp_path / "o.csv")[["x", "y"]].to_numpy()
    assert np.allclose(got, stack[1].xy[:20]) and not np.allclose(got, xy)


def test_deform_needs_the_refinement(sections, tmp_path, capsys):
    _, paths, _ = sections
    rc = main(["fit", *paths, "--out", str(tmp_path / "m.inrst"), "--deform", "--no-refine", "--quiet"])
    assert rc == 2 and "--deform" in capsys.readouterr().err and not (tmp_path / "m.inrst").exists()


def test_align_nonrigid_writes_a_grid_per_section(sections, tmp_path):
    from napari_inrst.align.deform import Deformation

    _, paths, _ = sections
    out = tmp_path / "t.json"
    assert main(["align", *paths[:3], "--method", "nonrigid", "--out", str(out), "--quiet"]) == 0
    rows = json.loads(out.read_text())
    assert [r["deformation"] is None for r in rows] == [False, True, False]  # the reference: none
    for r in rows:
        assert np.asarray(r["matrix"]).shape == (3, 3)
        if r["deformation"] is not None:
            g = Deformation.from_json(r["deformation"], out)
            assert np.abs(g.coef).max() <= g.max_disp_um
