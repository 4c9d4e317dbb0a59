"""SpatialData in, AnnData/SpatialData out: the reader's contract, the writers, the new commands.

Stores are built with the spatialdata API (never hand-written zarr) and read back through the
reader; every written .h5ad is read back with anndata (and a virtual section goes through
scanpy's neighbors + Leiden).
"""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pytest

from napari_inrst.cli import main
from napari_inrst.errors import InputError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def _write_store(path, shapes=None, points=None, table=None):
    import spatialdata as sd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sd.SpatialData(shapes=shapes or {}, points=points or {}, tables={"table": table}).write(path)
    return path


def _table(parts, region_key="region", instance_key="instance_id", **obs_cols):
    """parts: [(region, instance ids, X)] → a TableModel-parsed AnnData annotating those regions."""
    import anndata as ad
    import pandas as pd
    from spatialdata.models import TableModel

    X = np.concatenate([p[2] for p in parts]).astype(np.float32)
    obs = pd.DataFrame({region_key: pd.Categorical(np.concatenate([[p[0]] * len(p[1]) for p in parts])),
                        instance_key: np.concatenate([np.asarray(p[1]) for p in parts])})
    for k, v in obs_cols.items():
        obs[k] = v
    obs.index = [f"r{i}" for i in range(len(obs))]
    t = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(X.shape[1])]))
    return TableModel.parse(t, region=sorted({p[0] for p in parts}), region_key=region_key,
                            instance_key=instance_key)


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    """Two sections of known positions: 's_b' square polygons stored at half scale with a
    Scale(2) to 'global' (and Identity to 'raw'), 's_a' a points element; the table lists its
    rows in reverse order of the elements, with z, a non-constant column and a layer."""
    import geopandas as gpd
    import pandas as pd
    from shapely.geometry import Polygon
    from spatialdata.models import PointsModel, ShapesModel
    from spatialdata.transformations import Identity, Scale

    rng = np.random.default_rng(1)
    n = 40
    xy_a = rng.uniform(0, 800, (n, 2))
    xy_b = rng.uniform(0, 800, (n, 2))
    half = xy_b / 2
    polys = [Polygon([(x - 3, y - 3), (x + 3, y - 3), (x + 3, y + 3), (x - 3, y + 3)]) for x, y in half]
    shp = ShapesModel.parse(gpd.GeoDataFrame(geometry=polys, index=np.arange(n)),
                            transformations={"global": Scale([2.0, 2.0], axes=("x", "y")), "raw": Identity()})
    pts = PointsModel.parse(pd.DataFrame({"x": xy_a[:, 0], "y": xy_a[:, 1]}),
                            transformations={"global": Identity(), "raw": Identity()})
    Xa = rng.poisson(4, (n, 5)).astype(np.float32)
    Xb = rng.poisson(4, (n, 5)).astype(np.float32)
    order = np.arange(n)[::-1]
    t = _table([("s_b", order, Xb[order]), ("s_a", order, Xa[order])],
               z=np.r_[np.full(n, 30.0), np.full(n, 10.0)], zbad=np.arange(2 * n, dtype=float))
    t.layers["half"] = t.X * 0.5
    path = _write_store(tmp_path_factory.mktemp("sd") / "tiny.zarr", shapes={"s_b": shp}, points={"s_a": pts}, table=t)
    return {"path": path, "xy": {"s_a": xy_a, "s_b": xy_b}, "X": {"s_a": Xa, "s_b": Xb}, "half": {"s_b": half}}


def test_reader_contract_positions_order_z_layer(tiny_store):
    from napari_inrst.io.spatialdata import read_spatialdata

    secs = read_spatialdata(tiny_store["path"], z_key="z", unit_factor=2.0)
    assert [s.name for s in secs] == ["s_a", "s_b"]  # regions in sorted order
    assert [s.z for s in secs] == [20.0, 60.0]  # z column × unit factor
    for s in secs:
        # rows were listed in reverse: matched to their shapes/points by instance id
        np.testing.assert_allclose(s.adata.obsm["spatial"], tiny_store["xy"][s.name][::-1] * 2.0, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(s.adata.X), tiny_store["X"][s.name][::-1])
    raw = read_spatialdata(tiny_store["path"], coordinate_system="raw", layer="half")
    b = raw[1]
    np.testing.assert_allclose(b.adata.obsm["spatial"], tiny_store["half"]["s_b"][::-1], atol=1e-6)  # polygon centroids
    np.testing.assert_allclose(np.asarray(b.adata.X), tiny_store["X"]["s_b"][::-1] * 0.5)
    assert [s.z for s in raw] == [10.0, 30.0]  # a constant obs['z'] is used without --z-key


@pytest.mark.parametrize("kwargs, needle", [
    ({"coordinate_system": "nope"}, "no coordinate system 'nope'"),
    ({"layer": "nope"}, "no layer 'nope'"),
    ({"z_key": "zbad"}, "not constant within the section"),
    ({"z_key": "depth"}, "no obs column 'depth'"),
    ({"section_key": "batch"}, "no obs column 'batch'"),
    ({"table": "other"}, "no table 'other'"),
])
def test_bad_options_name_the_store_and_the_problem(tiny_store, kwargs, needle):
    from napari_inrst.io.spatialdata import read_spatialdata

    with pytest.raises(InputError) as err:
        read_spatialdata(tiny_store["path"], **kwargs)
    assert needle in str(err.value) and str(tiny_store["path"]) in str(err.value)
    assert "\n" not in str(err.value)


def test_table_rows_without_a_shape_and_non_stores_are_one_line_errors(tmp_path, tiny_store):
    import geopandas as gpd
    from shapely.geometry import Point
    from spatialdata.models import ShapesModel

    from napari_inrst.io.spatialdata import read_spatialdata

    shp = ShapesModel.parse(gpd.GeoDataFrame({"radius": np.ones(3)}, geometry=[Point(i, i) for i in range(3)],
                                             index=np.arange(3)))
    t = _table([("s", np.array([0, 1, 7]), np.ones((3, 2)))])
    path = _write_store(tmp_path / "bad.zarr", shapes={"s": shp}, table=t)
    with pytest.raises(InputError, match="1 table rows annotate instances missing from element 's'"):
        read_spatialdata(path)
    import shutil

    damaged = tmp_path / "damaged.zarr"
    shutil.copytree(tiny_store["path"], damaged)
    for f in (damaged / "shapes" / "s_b").glob("*.parquet"):
        f.unlink()
    with pytest.raises(InputError, match="not a readable SpatialData store"):
        read_spatialdata(damaged)
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError, match="not a SpatialData"):
        read_spatialdata(tmp_path / "plain")


def test_one_region_split_by_section_key(tmp_path):
    import geopandas as gpd
    from shapely.geometry import Point
    from spatialdata.models import ShapesModel

    from napari_inrst.io.spatialdata import read_spatialdata

    xy = np.arange(12, dtype=float).reshape(6, 2) * 10
    shp = ShapesModel.parse(gpd.GeoDataFrame({"radius": np.ones(6)}, geometry=[Point(*p) for p in xy], index=np.arange(6)))
    t = _table([("cells", np.arange(6), np.arange(12).reshape(6, 2) + 1.0)],
               slice_id=np.array(["b", "a", "b", "a", "b", "a"]), depth=np.array([5.0, 0, 5, 0, 5, 0]))
    path = _write_store(tmp_path / "one.zarr", shapes={"cells": shp}, table=t)
    secs = read_spatialdata(path, section_key="slice_id", z_key="depth")
    assert [(s.name, s.z, s.adata.n_obs) for s in secs] == [("a", 0.0, 3), ("b", 5.0, 3)]
    np.testing.assert_allclose(secs[0].adata.obsm["spatial"], xy[[1, 3, 5]])


def test_stack_commands_take_stores_and_cli_errors_are_one_line(tiny_store, tmp_path, capsys):
    from napari_inrst.cli import build_parser
    from napari_inrst.cli._common import load_stack

    store = str(tiny_store["path"])
    args = build_parser().parse_args(["fit", store, "--z-key", "z", "--out", "m.inrst"])
    stack = load_stack(args)
    assert stack.names == ["s_a", "s_b"] and list(stack.z) == [10.0, 30.0] and stack.n_genes == 5
    args = build_parser().parse_args(["evaluate", store, "--z", "0", "7", "--unit-factor", "0.5", "--holdout", "0"])
    st = load_stack(args)
    assert list(st.z) == [0.0, 3.5]
    np.testing.assert_allclose(st[0].xy_input, tiny_store["xy"]["s_a"][::-1] * 0.5, atol=1e-6)
    out = tmp_path / "m.inrst"
    for extra, needle in [(["--z", "1"], "holds 2 sections (s_a, s_b)"),
                          (["--z-key", "z", "--coordinate-system", "pixels"], "no coordinate system 'pixels'"),
                          (["--z-key", "z", "--layer", "raw"], "no layer 'raw'")]:
        assert main(["fit", store, *extra, "--out", str(out), "--steps", "5", "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("napari-inrst: error:") and needle in err and "\n" not in err
    assert not out.exists()


def test_without_spatialdata_a_message_says_how_to_install(tiny_store, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "spatialdata", None)  # import spatialdata → ImportError
    out = tmp_path / "m.inrst"
    assert main(["fit", str(tiny_store["path"]), "--z-key", "z", "--out", str(out)]) == 2
    assert "pip install 'napari-inrst[spatialdata]'" in capsys.readouterr().err
    assert not out.exists()


def test_napari_reader_opens_a_store(tiny_store):
    from napari_inrst.viewer.hooks import get_reader

    reader = get_reader(str(tiny_store["path"]))
    assert reader is not None
    layers = reader(str(tiny_store["path"]))
    assert [kw["name"] for _, kw, _ in layers] == ["s_a", "s_b"]
    assert all(kind == "points" for _, _, kind in layers)
    a = layers[0][0]  # (z, y, x) in µm
    np.testing.assert_array_equal(a[:, 0], 10.0)
    np.testing.assert_allclose(a[:, [2, 1]], tiny_store["xy"]["s_a"][::-1], atol=1e-6)
    assert float(layers[1][0][0, 0]) == 30.0


# --- virtual sections, imputation and QC results (analytic field, no training) ----------------
@pytest.fixture(scope="module")
def truth():
    from napari_inrst.field.api import TruthField
    from napari_inrst.synthetic.sample import SyntheticTissue

    tissue = SyntheticTissue(n_genes=12, depth=120.0)
    return TruthField(tissue), tissue


def test_virtual_section_is_the_field_inside_the_tissue_and_clusters_in_scanpy(truth, tmp_path):
    import anndata as ad
    import scanpy as sc

    from napari_inrst.io.anndata_out import virtual_section, write_h5ad

    field, tissue = truth
    vs = virtual_section(field, 50.0, 40.0)
    xyz = np.column_stack([vs.obsm["spatial"], vs.obs["z"]])
    assert tissue.inside(xyz).all() and (vs.obs["z"] == 50.0).all()
    # every grid point in tissue is there, on a 40 µm grid
    gx, gy = np.meshgrid(np.arange(0, tissue.width + 1e-9, 40.0), np.arange(0, tissue.height + 1e-9, 40.0))
    grid = np.column_stack([gx.ravel(), gy.ravel(), np.full(gx.size, 50.0)])
    assert vs.n_obs == int(tissue.inside(grid).sum()) > 300
    np.testing.assert_allclose(np.asarray(vs.X), tissue.truth(xyz), rtol=1e-5, atol=1e-6)
    path = write_h5ad(vs, tmp_path / "virtual.h5ad")
    back = ad.read_h5ad(path)
    assert list(back.var_names) == list(tissue.genes) and back.obsm["spatial"].shape == (vs.n_obs, 2)
    assert back.uns["napari_inrst"]["kind"] == "virtual_section" and back.uns["napari_inrst"]["spacing_um"] == 40.0
    sc.pp.neighbors(back, use_rep="X", n_neighbors=10, method="gauss")  # "umap" would JIT-compile for a minute
    sc.tl.leiden(back, resolution=0.5, flavor="igraph", n_iterations=2, directed=False)
    labels = back.obs["leiden"].astype(str)
    assert 2 <= labels.nunique() < vs.n_obs / 5  # spatial programs → a few domains, not noise


def test_virtual_section_refuses_empty_and_huge_grids(truth):
    from napari_inrst.io.anndata_out import virtual_section

    field, _ = truth
    with pytest.raises(InputError, match="no tissue at z = 900"):
        virtual_section(field, 900.0, 40.0)
    with pytest.raises(InputError, match="larger --spacing"):
        virtual_section(field, 50.0, 0.5)


def test_virtual_section_as_spatialdata_round_trips_through_the_reader(truth, tmp_path):
    from napari_inrst.io.anndata_out import virtual_section, write_spatialdata
    from napari_inrst.io.spatialdata import read_spatialdata

    field, _ = truth
    vs = virtual_section(field, 50.0, 80.0)
    path = write_spatialdata(vs, tmp_path / "virtual.zarr")
    write_spatialdata(vs, path)  # overwriting an existing store is atomic too
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    (sec,) = read_spatialdata(path)
    assert sec.name == "virtual_section" and sec.z == 50.0
    np.testing.assert_allclose(sec.adata.obsm["spatial"], vs.obsm["spatial"])
    np.testing.assert_allclose(np.asarray(sec.adata.X), np.asarray(vs.X), rtol=1e-6)


def test_impute_adds_a_layer_and_leaves_everything_else(truth, make_section, tmp_path):
    import anndata as ad

    from napari_inrst.io.anndata_out import impute_anndata, write_h5ad

    field, tissue = truth
    a = make_section(n=25, genes=(tissue.genes[3], "NOT_MODELED", tissue.genes[0]))
    a.obs["cell_type"] = "x"
    a.uns["mine"] = 1
    xyz = np.column_stack([a.obsm["spatial"] + 600, np.full(a.n_obs, 30.0)])
    back = ad.read_h5ad(write_h5ad(impute_anndata(field, a, xyz), tmp_path / "imp.h5ad"))
    np.testing.assert_array_equal(np.asarray(back.X), np.asarray(a.X))
    np.testing.assert_array_equal(back.obsm["spatial"], a.obsm["spatial"])
    assert back.uns["mine"] == 1 and (back.obs["cell_type"] == "x").all()
    lay = back.layers["inrst"]
    truth_vals = tissue.truth(xyz)
    np.testing.assert_allclose(lay[:, 0], truth_vals[:, 3], rtol=1e-5)
    np.testing.assert_allclose(lay[:, 2], truth_vals[:, 0], rtol=1e-5)
    assert np.isnan(lay[:, 1]).all() and list(back.var["inrst_modeled"]) == [True, False, True]
    np.testing.assert_array_equal(back.obs["inrst_occupancy"].to_numpy(), tissue.inside(xyz).astype(np.float32))


def test_qc_results_into_anndata(sample, tmp_path):
    import anndata as ad

    from napari_inrst.io.anndata_out import qc_anndata, write_h5ad

    stack, _ = sample
    rows = [{"index": i, "score": 0.9 - 0.1 * (i == 2), "z_score": -5.0 if i == 2 else 0.1, "rmse": 1.0,
             "rmse_rel": 0.5, "z_rmse": 0.0, "flagged": i == 2, "reason": "bad" if i == 2 else ""}
            for i in range(len(stack))]
    back = ad.read_h5ad(write_h5ad(qc_anndata(stack, rows), tmp_path / "qc.h5ad"))
    assert back.n_obs == sum(s.n_obs for s in stack)
    flagged = back.obs.groupby("section", observed=True)["qc_flagged"].first()
    assert list(flagged.index[flagged]) == [stack.names[2]]
    table = back.uns["napari_inrst_qc"]["sections"]
    assert list(table["section"]) == stack.names and list(table["flagged"]) == [i == 2 for i in range(len(stack))]
    s2 = back[back.obs["section"] == stack.names[2]]
    np.testing.assert_allclose(s2.obsm["spatial_input"], stack[2].xy_input)


# --- the commands on a store: a tiny model trained from a SpatialData store ---------------------
@pytest.fixture(scope="module")
def sample_store_model(tmp_path_factory):
    """The synthetic sample (3 aligned sections) as a store of circles + table (z in a column),
    trained through `fit STORE --z-key z` for a few steps."""
    import geopandas as gpd
    from shapely import points as shp_points
    from spatialdata.models import ShapesModel

    from napari_inrst.synthetic.sample import make_sample

    secs, tissue = make_sample(n_sections=3, missing=(), n_genes=20, misplace=False, spot_spacing=100, spacing_z=60)
    shapes, parts, zs = {}, [], []
    for k, a in enumerate(secs):
        name = f"sec{k}"
        shapes[name] = ShapesModel.parse(gpd.GeoDataFrame({"radius": np.full(a.n_obs, 27.5)},
                                                          geometry=shp_points(a.obsm["spatial"]), index=np.arange(a.n_obs)))
        parts.append((name, np.arange(a.n_obs), np.asarray(a.X)))
        zs.append(np.full(a.n_obs, a.uns["z_um"]))
    t = _table(parts, z=np.concatenate(zs))
    t.var_names = list(tissue.genes)
    d = tmp_path_factory.mktemp("sdfit")
    store = _write_store(d / "sample.zarr", shapes=shapes, table=t)
    model = d / "m.inrst"
    assert main(["fit", str(store), "--z-key", "z", "--no-align", "--steps", "30", "--out", str(model), "--quiet"]) == 0
    for k, a in enumerate(secs):
        a.write_h5ad(d / f"sec{k}.h5ad")
    return {"store": store, "model": model, "dir": d, "tissue": tissue}


def test_slice_writes_a_virtual_section_at_an_unmeasured_z(sample_store_model, tmp_path, capsys):
    import anndata as ad

    from napari_inrst.field.model import load_model

    m = sample_store_model
    model = load_model(m["model"])
    assert model.stack_meta["names"] == ["sec0", "sec1", "sec2"] and model.stack_meta["z"] == [0.0, 60.0, 120.0]
    out = tmp_path / "v.h5ad"
    assert main(["slice", str(m["model"]), "--z", "30", "--out", str(out)]) == 0
    v = ad.read_h5ad(out)
    assert list(v.var_names) == list(model.genes) and v.obsm["spatial"].shape == (v.n_obs, 2) and v.n_obs > 50
    assert (v.obs["z"] == 30.0).all() and (v.obs["occupancy"] >= 0.5).all()
    sp = model.stack_meta["spot_spacing_um"]
    assert v.uns["napari_inrst"]["spacing_um"] == pytest.approx(sp)  # default: the data's spot spacing
    steps = (v.obsm["spatial"] - v.obsm["spatial"].min(0)) / sp  # on a grid of that spacing
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-6)
    np.testing.assert_allclose(np.asarray(v.X), model.predict(np.column_stack([v.obsm["spatial"], v.obs["z"]])),
                               rtol=1e-4, atol=1e-5)
    assert "pseudo-spots at z = 30" in capsys.readouterr().err
    bad = tmp_path / "none.h5ad"
    assert main(["slice", str(m["model"]), "--z", "30", "--genes", "NOPE", "--out", str(bad)]) == 2
    assert "NOPE" in capsys.readouterr().err and not bad.exists()
    assert main(["slice", str(m["model"]), "--z", "2000", "--out", str(bad)]) == 2  # far beyond the stack
    assert "--extrapolate" in capsys.readouterr().err and not bad.exists()


def test_predict_writes_anndata_and_impute_places_the_section(sample_store_model, tmp_path):
    import anndata as ad

    from napari_inrst.field.model import load_model

    m = sample_store_model
    model = load_model(m["model"])
    q = tmp_path / "q.csv"
    q.write_text("x,y,z\n1000,700,30\n900,800,60\n")
    out = tmp_path / "p.h5ad"
    assert main(["predict", str(m["model"]), "--coords", str(q), "--out", str(out)]) == 0
    p = ad.read_h5ad(out)
    np.testing.assert_array_equal(p.obsm["spatial"], [[1000, 700], [900, 800]])
    assert list(p.obs["z"]) == [30.0, 60.0] and list(p.var_names) == list(model.genes)
    np.testing.assert_allclose(np.asarray(p.X), model.predict([[1000, 700, 30], [900, 800, 60]]), rtol=1e-5)
    assert p.uns["napari_inrst"]["provenance"]["napari_inrst"]
    imp = tmp_path / "sec1_imputed.h5ad"
    assert main(["impute", str(m["model"]), str(m["dir"] / "sec1.h5ad"), "--section", "sec1", "--out", str(imp),
                 "--quiet"]) == 0
    a, b = ad.read_h5ad(m["dir"] / "sec1.h5ad"), ad.read_h5ad(imp)
    xyz = np.column_stack([a.obsm["spatial"], np.full(a.n_obs, 60.0)])
    np.testing.assert_allclose(b.layers["inrst"], model.predict(xyz), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(b.X), np.asarray(a.X))
    # a file the model was not trained on: placed at the z it records (uns['z_um'])
    import shutil

    other = tmp_path / "other.h5ad"
    shutil.copy(m["dir"] / "sec1.h5ad", other)
    assert main(["impute", str(m["model"]), str(other), "--out", str(tmp_path / "o.h5ad"), "--quiet"]) == 0
    np.testing.assert_allclose(ad.read_h5ad(tmp_path / "o.h5ad").layers["inrst"], b.layers["inrst"], rtol=1e-5)
    del a.uns["z_um"]
    a.write_h5ad(other)
    assert main(["impute", str(m["model"]), str(other), "--out", str(tmp_path / "o2.h5ad")]) == 2
    assert not (tmp_path / "o2.h5ad").exists()


# --- the bar: three MERFISH sections in a SpatialData store ------------------------------------
@pytest.mark.shared
def test_merfish_store_fits_slices_predicts_and_qc_prints_json(merfish_dir, tmp_path, capsys):
    import anndata as ad
    import geopandas as gpd
    import pandas as pd
    from shapely import points as shp_points
    from spatialdata.models import ShapesModel

    rng = np.random.default_rng(0)
    shapes, parts, zs = {}, [], []
    for name, z in [("section_04", 40.0), ("section_09", 90.0), ("section_14", 140.0)]:
        a = ad.read_h5ad(merfish_dir / f"{name}.h5ad")
        a = a[np.sort(rng.choice(a.n_obs, 1200, replace=False))]
        shapes[name] = ShapesModel.parse(gpd.GeoDataFrame({"radius": np.full(a.n_obs, 5.0)},
                                                          geometry=shp_points(np.asarray(a.obsm["spatial"])),
                                                          index=np.arange(a.n_obs)))
        X = a.X.toarray() if hasattr(a.X, "toarray") else np.asarray(a.X)
        parts.append((name, np.arange(a.n_obs), X))
        zs.append(np.full(a.n_obs, z))
        genes = list(a.var_names)
    t = _table(parts, z=np.concatenate(zs))
    t.var_names = pd.Index(genes)
    store = str(_write_store(tmp_path / "merfish.zarr", shapes=shapes, table=t))
    model = tmp_path / "m.inrst"
    assert main(["fit", store, "--z-key", "z", "--normalize", "none", "--no-align", "--genes", "30",
                 "--steps", "30", "--out", str(model), "--quiet"]) == 0
    v = tmp_path / "v.h5ad"
    assert main(["slice", str(model), "--z", "65", "--out", str(v), "--quiet"]) == 0  # between sections
    va = ad.read_h5ad(v)
    assert va.n_vars == 30 and set(va.var_names) <= set(genes) and va.obsm["spatial"].shape == (va.n_obs, 2)
    assert va.n_obs > 500
    q = tmp_path / "q.csv"
    q.write_text("x,y,z\n0,0,65\n")
    assert main(["predict", str(model), "--coords", str(q), "--out", str(tmp_path / "p.h5ad")]) == 0
    assert ad.read_h5ad(tmp_path / "p.h5ad").shape == (1, 30)
    capsys.readouterr()
    qc_out = tmp_path / "qc.h5ad"
    assert main(["qc", store, "--z-key", "z", "--normalize", "none", "--no-align", "--genes", "30",
                 "--steps", "30", "--quiet", "--out", str(qc_out)]) == 0
    res = json.loads(capsys.readouterr().out)
    qa = ad.read_h5ad(qc_out)
    assert qa.n_obs == 3600 and list(qa.obs["section"].cat.categories) == list(shapes)
    z_by_section = qa.obs.groupby("section", observed=True)["qc_z_score"].first()
    assert [z_by_section[s["name"]] for s in res["sections"]] == pytest.approx([s["z_score"] for s in res["sections"]])
    assert [s["name"] for s in res["sections"]] == ["section_04", "section_09", "section_14"]
    assert all(isinstance(s["score"], float) and isinstance(s["flagged"], bool) for s in res["sections"])
    assert res["flag_z"] == 3.0 and res["settings"]["steps"] == 30
