import json

import numpy as np
import pytest

from napari_inrst import InputError
from napari_inrst.io import read_csv_pair, read_h5ad, read_h5ad_sections, read_path, read_visium
from napari_inrst.stack import stack_from_inputs

from ..conftest import BREAST_UNIT, combined_h5ad


# --- real data ------------------------------------------------------------------------------
def test_breast_st_reads_as_unaligned_stack_with_differing_panels(breast_dir):
    inputs = read_path(breast_dir, counts_expected=True)
    assert [s.name for s in inputs] == ["section1", "section2", "section3", "section4"]
    panels = [set(s.adata.var_names) for s in inputs]
    assert len({len(p) for p in panels}) > 1  # gene panels differ
    st = stack_from_inputs(inputs, unit_factor=BREAST_UNIT)
    assert st.genes and len(st.genes) == len(set.intersection(*panels))
    st_u = stack_from_inputs(inputs, gene_policy="union")
    assert len(st_u.genes) == len(set.union(*panels)) > len(st.genes)
    assert all(250 <= s.n_obs <= 265 for s in st)
    assert np.all(st[0].adata.layers["counts"].sum(1) > 0)


def test_merfish_reads_five_sections_normalized(merfish_dir):
    inputs = read_path(merfish_dir)
    assert len(inputs) == 5 and all(s.adata.n_vars == 155 for s in inputs)
    z = [1000 * float(s.adata.obs["slice_id"].iloc[0]) for s in inputs]
    st = stack_from_inputs(inputs, z, normalize="none")
    assert sum(s.n_obs for s in st) > 27000
    assert np.allclose(np.diff(st.z), 50.0)
    assert "Region" in st[0].adata.obs


def test_one_h5ad_split_by_section_column(tmp_path, make_section):
    path = combined_h5ad(tmp_path, make_section, z=(30.0, 10.0))
    secs = read_h5ad_sections(path, "slice", z_key="zz")
    assert [s.name for s in secs] == ["s2", "s1"] and [s.z for s in secs] == [10.0, 30.0]
    with pytest.raises(InputError, match="no obs column 'nope'"):
        read_h5ad_sections(path, "nope")


def test_csv_pair(tmp_path):
    import pandas as pd

    counts = pd.DataFrame({"G1": [1, 0, 3], "G2": [0, 2, 2]}, index=["a", "b", "c"])
    coords = pd.DataFrame({"x": [0.0, 1.0, 2.0], "y": [5.0, 6.0, 7.0]}, index=["c", "b", "a"])
    counts.to_csv(tmp_path / "s_counts.csv")
    coords.to_csv(tmp_path / "s_coords.csv")
    a = read_csv_pair(tmp_path / "s_counts.csv", tmp_path / "s_coords.csv", counts_expected=True)
    assert list(a.var_names) == ["G1", "G2"]
    np.testing.assert_array_equal(a.obsm["spatial"], [[2, 7], [1, 6], [0, 5]])


def _write_visium(outs, positions=True, header=True):
    import h5py

    outs.mkdir(parents=True)
    (outs / "spatial").mkdir()
    rng = np.random.default_rng(0)
    n_spots, n_genes = 6, 4
    M = rng.poisson(2, (n_genes, n_spots)).astype(np.int32)
    from scipy import sparse

    csc = sparse.csc_matrix(M)
    with h5py.File(outs / "filtered_feature_bc_matrix.h5", "w") as f:
        g = f.create_group("matrix")
        g["data"], g["indices"], g["indptr"] = csc.data, csc.indices, csc.indptr
        g["shape"] = np.array(M.shape)
        g["barcodes"] = np.array([f"AAA-{i}".encode() for i in range(n_spots)])
        ft = g.create_group("features")
        ft["name"] = np.array([b"GeneA", b"GeneB", b"GeneA", b"GeneD"])
        ft["id"] = np.array([f"ENS{i}".encode() for i in range(n_genes)])
        ft["feature_type"] = np.array([b"Gene Expression"] * n_genes)
    (outs / "spatial" / "scalefactors_json.json").write_text(json.dumps({"spot_diameter_fullres": 110.0}))
    if positions:
        rows = [f"AAA-{i},{int(i != 5)},{i},{i},{100 * i},{200 * i}" for i in range(n_spots)]
        name = "tissue_positions.csv" if header else "tissue_positions_list.csv"
        text = ("barcode,in_tissue,array_row,array_col,pxl_row_in_fullres,pxl_col_in_fullres\n" if header else "")
        (outs / "spatial" / name).write_text(text + "\n".join(rows) + "\n")
    return M


@pytest.mark.parametrize("header", [True, False])
def test_visium_outs_folder(tmp_path, header):
    M = _write_visium(tmp_path / "outs", header=header)
    a = read_visium(tmp_path / "outs")
    assert a.n_obs == 5  # the spot outside tissue is dropped
    assert a.var_names.is_unique
    # 55 µm spot / 110 px → 0.5 µm per pixel; x = pxl_col, y = pxl_row
    np.testing.assert_allclose(a.obsm["spatial"][1], [100.0, 50.0])
    np.testing.assert_array_equal(a.X.toarray()[2], M[:, 2])
    assert read_path(tmp_path / "outs")[0].adata.n_obs == 5


# --- bad input: one test per case -----------------------------------------------------------
def _write(a, path):
    a.write_h5ad(path)
    return path


def test_missing_spatial(tmp_path, make_section):
    a = make_section()
    del a.obsm["spatial"]
    p = _write(a, tmp_path / "nospatial.h5ad")
    with pytest.raises(InputError, match=r"nospatial\.h5ad: no obsm\['spatial'\]"):
        read_h5ad(p)


def test_non_2d_spatial(tmp_path, make_section):
    a = make_section()
    a.obsm["spatial"] = np.zeros((a.n_obs, 3))
    p = _write(a, tmp_path / "threed.h5ad")
    with pytest.raises(InputError, match=r"threed\.h5ad: obsm\['spatial'\] must be n×2"):
        read_h5ad(p)


def test_nan_coordinates(tmp_path, make_section):
    a = make_section()
    a.obsm["spatial"][4, 1] = np.nan
    p = _write(a, tmp_path / "nan.h5ad")
    with pytest.raises(InputError, match=r"nan\.h5ad: 1 cells/spots have NaN or infinite coordinates \(first: 'c4'\)"):
        read_h5ad(p)


def test_inf_expression(tmp_path, make_section):
    a = make_section()
    a.X[2, 2] = np.inf
    p = _write(a, tmp_path / "inf.h5ad")
    with pytest.raises(InputError, match=r"inf\.h5ad: expression has 1 NaN or infinite"):
        read_h5ad(p)


def test_negative_counts_where_counts_expected(tmp_path, make_section):
    a = make_section()
    a.X[0, 0] = -2
    p = _write(a, tmp_path / "neg.h5ad")
    with pytest.raises(InputError, match=r"neg\.h5ad: expression has negative values"):
        read_h5ad(p, counts_expected=True)
    assert read_h5ad(p, counts_expected=False).n_obs == 30  # fine for normalize='none'


def test_duplicate_names(tmp_path, make_section):
    a = make_section()
    a.obs_names = ["x"] * 2 + [f"c{i}" for i in range(2, a.n_obs)]
    p = tmp_path / "dup.h5ad"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a.write_h5ad(p)
    with pytest.raises(InputError, match=r"dup\.h5ad: 1 duplicate cell/spot names \(first: 'x'\)"):
        read_h5ad(p)


def test_empty_section(tmp_path, make_section):
    a = make_section()[:0].copy()
    p = _write(a, tmp_path / "empty.h5ad")
    with pytest.raises(InputError, match=r"empty\.h5ad: empty section"):
        read_h5ad(p)


def test_corrupt_file(tmp_path):
    p = tmp_path / "corrupt.h5ad"
    p.write_bytes(b"this is not hdf5 at all" * 10)
    with pytest.raises(InputError, match=r"corrupt\.h5ad: not a readable AnnData \.h5ad file"):
        read_h5ad(p)


def test_foreign_hdf5_file(tmp_path):
    import h5py

    p = tmp_path / "foreign.h5ad"
    with h5py.File(p, "w") as f:
        f["something"] = np.arange(3)
    with pytest.raises(InputError, match=r"foreign\.h5ad: not a readable AnnData|foreign\.h5ad: no obsm|foreign\.h5ad: empty"):
        read_h5ad(p)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"gone\.h5ad: no such file"):
        read_h5ad(tmp_path / "gone.h5ad")


def test_visium_without_positions(tmp_path):
    _write_visium(tmp_path / "outs", positions=False)
    with pytest.raises(InputError, match=r"outs: Visium folder without spot positions"):
        read_visium(tmp_path / "outs")


def test_atomic_saves_get_the_usual_file_mode(tmp_path):
    """Files written through atomic_path get 0666 & ~umask like any new file (mkstemp's 0600 would
    hide a user's model or figure from the rest of their group)."""
    import os

    from napari_inrst.io.atomic import atomic_path

    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "f.bin") as tmp:
            tmp.write_bytes(b"x")
        assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o644
        with pytest.raises(RuntimeError):
            with atomic_path(tmp_path / "g.bin") as tmp:
                tmp.write_bytes(b"half")
                raise RuntimeError("interrupted")
        assert not (tmp_path / "g.bin").exists() and not list(tmp_path.glob(".g.bin*"))
    finally:
        os.umask(old)
