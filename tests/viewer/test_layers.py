"""Section layer data without Qt: the default gene computed once, level-of-detail layers of a fixed
size (cap read at each call), the Sections widget's worker job, renormalization in two steps."""

import numpy as np

from tests.large_stack import counts_stack


def test_default_gene_is_computed_once_per_stack_and_normalization(monkeypatch):
    from napari_inrst.render import sections as rs
    from napari_inrst.stack import renormalize
    from napari_inrst.viewer.layers import default_gene, stack_layer_data

    stack = counts_stack(n_sections=2, n_cells=3000, n_genes=12)
    calls = []
    orig = rs.default_gene_sampled
    monkeypatch.setattr(rs, "default_gene_sampled", lambda st, *a, **k: calls.append(1) or orig(st, *a, **k))
    g = default_gene(stack)
    stack_layer_data(stack)
    assert default_gene(stack) == g and len(calls) == 1  # opening, Train and View ask again: cached
    renormalize(stack, "none")
    default_gene(stack)
    assert len(calls) == 2  # other values: computed again


def test_level_of_detail_layers_have_a_fixed_size_and_the_job_keeps_their_cells(monkeypatch):
    from napari_inrst.render import sections as rs
    from napari_inrst.viewer.layers import section_points
    from napari_inrst.viewer.sections_state import section_updates_job

    stack = counts_stack(n_sections=2, n_cells=3000, n_genes=12)
    monkeypatch.setattr(rs, "LOD_CAP", 500)  # read at each call
    data, kw, _ = section_points(stack, 0, "g3")
    idx = kw["metadata"][rs.LOD_KEY]["idx"]
    assert len(data) == len(idx) == 500
    for rect in (None, (100.0, 200.0, 100.0, 150.0), (-1e6, 1e6, -1e6, 1e6)):  # far in, all in view
        assert len(rs.lod_indices(stack[0].xy, rs.lod_rank(3000), rect)) == 500
    monkeypatch.setattr(rs, "LOD_CAP", 5000)
    data_all, kw_all, _ = section_points(stack, 1, "g3")
    assert len(data_all) == 3000 and rs.LOD_KEY not in kw_all["metadata"]  # small: every cell

    stack.set_z([5.0, 30.0])
    monkeypatch.setattr(rs, "LOD_CAP", 500)
    layer0, layer1 = object(), object()  # passed through, never touched
    out = list(section_updates_job(stack, "g5", "magma", [(layer0, 0, idx), (layer1, 1, None)], move=True))
    (l0, gene, cmap, (i0, zyx0, v0, rgba0), moved, size0), (l1, _, _, (i1, zyx1, v1, _), _, _) = out
    assert l0 is layer0 and l1 is layer1 and gene == "g5" and cmap == "magma" and moved and size0 == 4.7
    assert np.array_equal(i0, idx) and np.all(zyx0[:, 0] == 5.0)  # the cells shown, moved
    np.testing.assert_allclose(zyx0[:, [2, 1]], stack[0].xy[idx])
    np.testing.assert_allclose(v0, rs.gene_values(stack[0], 5)[idx])
    assert len(i1) == len(zyx1) == 500 and np.all(zyx1[:, 0] == 30.0)  # no subset yet: one is picked
    recolour = list(section_updates_job(stack, "g5", "viridis", [(layer0, 0, idx)]))
    assert recolour[0][3][1] is None and recolour[0][5] is None  # a recolour does not move


def test_renormalized_sections_change_nothing_until_installed():
    from napari_inrst.stack import install_normalized, renormalize, renormalized_sections

    stack = counts_stack(n_sections=2, n_cells=2000, n_genes=8)
    before = stack[0].X.copy()
    new = renormalized_sections(stack, "none")
    assert stack.normalize == "log1p" and np.array_equal(stack[0].X, before)
    install_normalized(stack, "none", new)
    assert stack.normalize == "none" and stack[0].adata.uns["spot_diameter_um"] == 4.7
    np.testing.assert_allclose(stack[0].X, stack[0].adata.layers["values"].toarray())
    renormalize(stack, "log1p")
    np.testing.assert_allclose(stack[0].X, before, rtol=1e-5)
