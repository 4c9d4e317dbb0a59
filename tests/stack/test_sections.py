import numpy as np
import pytest

from napari_inrst import InputError
from napari_inrst.stack import build_stack, highly_variable_genes, normalize_log1p


def test_intersection_is_default_and_reported(make_section):
    a = make_section(genes=("A", "B", "C", "D"))
    b = make_section(genes=("B", "C", "D", "E"), seed=1)
    st = build_stack([a, b], [0, 10])
    assert st.genes == ["B", "C", "D"]
    assert st.report["n_genes_intersection"] == 3 and st.report["n_genes_union"] == 5
    assert st.report["gene_policy"] == "intersection"


def test_union_fills_missing_genes_with_zeros(make_section):
    a = make_section(genes=("A", "B"))
    b = make_section(genes=("B", "C"), seed=1)
    st = build_stack([a, b], [0, 10], gene_policy="union", normalize="none")
    assert st.genes == ["A", "B", "C"]
    assert np.all(st[0].X[:, 2] == 0) and np.all(st[1].X[:, 0] == 0)
    np.testing.assert_allclose(st[1].X[:, 2], b.X[:, 1])
    assert st.report["n_genes_kept"] == 3


def test_log1p_per_10k_and_raw_counts_kept(make_section):
    a = make_section()
    st = build_stack([a], [0])
    X = np.asarray(a.X)
    expect = np.log1p(X / X.sum(1, keepdims=True) * 1e4)
    np.testing.assert_allclose(st[0].X, expect, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(st[0].adata.layers["counts"]), X)
    np.testing.assert_allclose(normalize_log1p(X), expect, rtol=1e-5)


def test_log1p_uses_library_size_of_all_measured_genes(make_section):
    a = make_section(genes=("A", "B", "C", "D"))
    b = make_section(genes=("A", "B", "C"), seed=2)  # a stack needs ≥ 3 shared genes
    st = build_stack([a, b], [0, 1])
    X = np.asarray(a.X)
    np.testing.assert_allclose(st[0].X, np.log1p(X[:, :3] / X.sum(1, keepdims=True) * 1e4), rtol=1e-5)


def test_none_keeps_values_and_allows_negative(make_section):
    a = make_section(counts=False)
    a.X[0, 0] = -1.5
    st = build_stack([a], [0], normalize="none")
    np.testing.assert_allclose(st[0].X, a.X)


def test_unit_factor_scales_coordinates_and_z(make_section):
    a = make_section()
    st = build_stack([a, make_section(seed=3)], [0, 2], unit_factor=100.0)
    np.testing.assert_allclose(st[0].xy_input, a.obsm["spatial"] * 100)
    assert list(st.z) == [0.0, 200.0]


def test_highly_variable_genes_picks_the_variable_ones():
    rng = np.random.default_rng(0)
    X = rng.normal(2.0, 0.05, (500, 50))
    X[:, [3, 17, 40]] += rng.normal(0, 2.0, (500, 3))
    assert set(highly_variable_genes(np.abs(X), 3)) == {3, 17, 40}


def test_n_top_genes_selection(make_section):
    a = make_section(n=200, genes=tuple("ABCDEFGH"))
    st = build_stack([a], [0], n_top_genes=3)
    assert len(st.genes) == 3 and st.report["n_top_genes"] == 3 and st[0].X.shape[1] == 3


def test_transforms_and_stack_frame(make_section):
    a, b = make_section(), make_section(seed=1)
    st = build_stack([a, b], [0, 20])
    M = np.array([[0.0, -1.0, 5.0], [1.0, 0.0, -2.0], [0, 0, 1]])
    st.set_transforms([np.eye(3), M])
    xy = b.obsm["spatial"]
    np.testing.assert_allclose(st[1].xy, np.column_stack([-xy[:, 1] + 5, xy[:, 0] - 2]))
    c = st.coords()
    assert c.shape == (60, 3) and set(c[:, 2]) == {0.0, 20.0}
    assert list(st.section_of()) == [0] * 30 + [1] * 30


def test_fewer_than_two_sections_where_stack_needed(make_section):
    with pytest.raises(InputError, match="at least 2 sections"):
        build_stack([make_section()], [0], min_sections=2, sources=["only.h5ad"])


def test_two_sections_at_same_z(make_section):
    with pytest.raises(InputError, match=r"b\.h5ad.*same z"):
        build_stack([make_section(), make_section(seed=1)], [5, 5], sources=["a.h5ad", "b.h5ad"])


def test_no_shared_genes(make_section):
    with pytest.raises(InputError, match="no genes are shared"):
        build_stack([make_section(genes=("A", "B")), make_section(genes=("C", "D"))], [0, 1],
                    sources=["a.h5ad", "b.h5ad"])


def test_sparse_and_dense_sections_give_the_same_stack_whatever_the_gene_order():
    """Sparse counts are gathered into the stack's gene order (or kept when already in it) as
    dense ones are: same values, same raw counts, for both gene policies."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(0)

    def mk(genes, sparse):
        X = rng.poisson(1.0, (40, len(genes))).astype(np.float32)
        a = ad.AnnData(X=sp.csr_matrix(X) if sparse else X, var=pd.DataFrame(index=pd.Index(genes)))
        a.obsm["spatial"] = rng.random((40, 2)) * 100
        return a

    dense = [mk(["A", "B", "C", "D"], False), mk(["D", "B", "A", "C", "E"], False)]
    sparse = [a.copy() for a in dense]
    for a in sparse:
        a.X = sp.csr_matrix(a.X)
    for policy in ("intersection", "union"):
        d, s = (build_stack(x, [0.0, 10.0], gene_policy=policy) for x in (dense, sparse))
        assert d.genes == s.genes
        for x, y in zip(d.sections, s.sections):
            np.testing.assert_allclose(np.asarray(x.X), np.asarray(y.X), rtol=1e-6)
            np.testing.assert_allclose(np.asarray(x.adata.layers["counts"]), y.adata.layers["counts"].toarray())
