"""Scale: the atlas generator, lazily read sections, projected (low-rank, streamed) targets, the
lazy ``fit`` path, and the CPU-thread choice."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_inrst.errors import InputError  # noqa: E402
from napari_inrst.field import FieldConfig, Fourier  # noqa: E402
from napari_inrst.field.data import ProjectedData, StackData, choose_data  # noqa: E402
from napari_inrst.field.fit import fit_field  # noqa: E402
from napari_inrst.stack.lazy import open_lazy_stack  # noqa: E402

QUICK = dict(steps=160, batch_size=1024, width=64, depth=2, rank=16, val_every=20, patience=4,
             encoding=Fourier(min_wavelength_xy_um=100.0), rc_pretrain_steps=30, threads=1, ensemble=1)


@pytest.fixture(scope="module")
def atlas(tmp_path_factory):
    """A small atlas on disk (6,000 cells × 80 genes, 6 sections) and its analytic tissue."""
    from napari_inrst.synthetic.atlas import atlas_tissue, write_atlas

    d = tmp_path_factory.mktemp("atlas")
    args = dict(n_cells=6000, n_genes=80, n_sections=6, cell_spacing_um=12.0, spacing_z=20.0, seed=3)
    paths = write_atlas(d, **args)
    return paths, atlas_tissue(**args), [20.0 * i for i in range(6)]


def test_atlas_sections_are_sized_placed_and_follow_the_truth(atlas):
    import anndata as ad
    from scipy import sparse

    paths, tissue, z = atlas
    assert [p.name for p in paths] == [f"section_{i:03d}.h5ad" for i in range(6)]
    a = ad.read_h5ad(paths[2])
    assert a.n_obs == 1000 and a.n_vars == 80 and sparse.issparse(a.X)
    assert a.uns["z_um"] == 40.0
    xyz = np.column_stack([a.obsm["spatial"], np.full(a.n_obs, 40.0)])
    assert tissue.inside(xyz).all()  # cells only inside the outline
    # cell spacing as asked (mean nearest-neighbour distance of a Poisson process ≈ 0.5 / sqrt(density))
    from napari_inrst.stack import estimate_spacing

    assert 4.0 < estimate_spacing(a.obsm["spatial"]) < 12.0
    # counts follow the analytic rates: normalized profile averaged over cells ≈ mean rate
    X = a.X.toarray()
    frac = (X / X.sum(1, keepdims=True)).mean(0)
    np.testing.assert_allclose(frac, tissue.rates(xyz).mean(0), atol=0.01)


def test_lazy_chunks_equal_the_in_memory_stack(atlas):
    from napari_inrst.io.readers import read_h5ad
    from napari_inrst.stack import build_stack

    paths, _, z = atlas
    lazy = open_lazy_stack(paths, z)
    mem = build_stack([read_h5ad(p, counts_expected=True) for p in paths], z)
    assert lazy.genes == mem.genes and lazy.n_obs == sum(s.n_obs for s in mem.sections)
    for i in (0, 3):
        chunks = list(lazy.iter_chunks(i, chunk_rows=256))
        assert [r0 for r0, _ in chunks] == list(range(0, lazy[i].n_obs, 256))
        np.testing.assert_allclose(np.concatenate([c for _, c in chunks]), mem[i].X, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(lazy[i].xy, mem[i].xy)
    rows = np.array([3, 4, 500, 999])
    got = np.concatenate([c for _, c in lazy.iter_chunks(1, chunk_rows=256, rows=rows)])
    np.testing.assert_allclose(got, mem[1].X[rows], rtol=1e-5, atol=1e-5)
    sub = lazy.subsample(100, seed=0)
    assert [s.n_obs for s in sub.sections] == [100] * 6 and sub.genes == lazy.genes
    # the expression stays on disk: X of a lazy section is a backed dataset, not an array
    assert not isinstance(lazy[0].adata.X, np.ndarray)
    lazy.close()


def _write(tmp_path, name, X, xy=None, names=None):
    import anndata as ad
    import pandas as pd

    n = X.shape[0]
    a = ad.AnnData(X=X.astype(np.float32), obs=pd.DataFrame(index=names or [f"c{i}" for i in range(n)]),
                   var=pd.DataFrame(index=[f"g{j}" for j in range(X.shape[1])]))
    a.obsm["spatial"] = np.random.default_rng(0).uniform(0, 100, (n, 2)) if xy is None else xy
    p = tmp_path / name
    a.write_h5ad(p)
    return p


def test_lazy_bad_input_names_the_file(tmp_path):
    good = _write(tmp_path, "good.h5ad", np.ones((20, 4)))
    X = np.ones((20, 4))
    X[17, 2] = np.nan
    nan = _write(tmp_path, "nan.h5ad", X)
    st = open_lazy_stack([good, nan], [0, 10])
    with pytest.raises(InputError, match="nan.h5ad.*NaN"):
        list(st.iter_chunks(1, chunk_rows=8))
    neg = _write(tmp_path, "neg.h5ad", -np.ones((20, 4)))
    with pytest.raises(InputError, match="neg.h5ad.*negative"):
        list(open_lazy_stack([neg], [0]).iter_chunks(0))
    assert len(list(open_lazy_stack([neg], [0], normalize="none").iter_chunks(0))) == 1
    dup = _write(tmp_path, "dup.h5ad", np.ones((3, 4)), names=["a", "a", "b"])
    with pytest.raises(InputError, match="dup.h5ad.*duplicate"):
        open_lazy_stack([dup], [0])
    bad_xy = _write(tmp_path, "xy.h5ad", np.ones((3, 4)), xy=np.array([[0, 0], [np.inf, 1], [2, 2.0]]))
    with pytest.raises(InputError, match="xy.h5ad.*infinite"):
        open_lazy_stack([bad_xy], [0])
    junk = tmp_path / "junk.h5ad"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(InputError, match="junk.h5ad"):
        open_lazy_stack([junk], [0])
    with pytest.raises(InputError, match="same z"):
        open_lazy_stack([good, good], [5, 5])
    # without z: the files' own; a file that records none is named
    with pytest.raises(InputError, match="good.h5ad: records no z"):
        open_lazy_stack([good], None)


def test_lazy_stack_takes_z_from_the_files(atlas):
    paths, _, z = atlas
    st = open_lazy_stack(paths[:3], None, unit_factor=1.0)
    assert [s.z for s in st.sections] == z[:3]


def test_projected_targets_give_the_gene_space_error_exactly(sample):
    """‖V ĉ − x‖² = ‖ĉ − c‖² + residual for any latent ĉ: training on n × r projections optimizes
    the same RMSE over all genes as dense targets."""
    stack, _ = sample
    cfg = FieldConfig(rank=12)
    dense = StackData(stack, cfg)
    proj = ProjectedData(stack, cfg)
    np.testing.assert_allclose(proj.mean, dense.mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(proj.std, dense.std, rtol=1e-3)
    V = proj.basis.astype(np.float64)
    np.testing.assert_allclose(V.T @ V, np.eye(12), atol=1e-5)
    rng = np.random.default_rng(0)
    rows = rng.choice(dense.n, 50, replace=False)
    c_hat = rng.normal(size=(50, 12))
    x = dense.targets[rows].astype(np.float64)
    lhs = ((c_hat @ V.T - x) ** 2).sum(1)
    rhs = ((c_hat - proj.targets[rows]) ** 2).sum(1) + proj.resid[rows]
    np.testing.assert_allclose(lhs, rhs, rtol=1e-3)
    # the first principal axes carry most of the spatial signal
    assert proj.explained > 0.3


def test_choose_data_switches_by_size_and_lazy(sample, atlas, monkeypatch):
    import napari_inrst.field.data as data_mod

    stack, _ = sample
    assert isinstance(choose_data(stack, FieldConfig()), StackData)
    monkeypatch.setattr(data_mod, "DENSE_LIMIT", 1000)
    assert isinstance(choose_data(stack, FieldConfig()), ProjectedData)
    paths, _, z = atlas
    lazy = open_lazy_stack(paths, z)
    with pytest.raises(InputError, match="lazily"):
        choose_data(lazy, FieldConfig(targets="dense"))


@pytest.mark.parametrize("standardize", [True, False])
def test_projected_field_matches_the_truth_like_the_dense_one(standardize):
    """Both target spaces (z-scores; centred values) through dense and projected targets."""
    from napari_inrst.synthetic.sample import sample_stack

    stack, tissue = sample_stack(n_genes=60)
    stack.set_transforms([s.adata.uns["truth_matrix"] for s in stack.sections])
    errs = {}
    for mode in ("dense", "projected"):
        m = fit_field(stack, FieldConfig(**QUICK, targets=mode, standardize=standardize))
        assert m.provenance["targets"] == mode
        xy = tissue.spots(90.0, 60.0, np.random.default_rng(0))  # a missing section
        xyz = np.column_stack([xy, np.full(len(xy), 90.0)])
        truth = tissue.truth(xyz, m.genes)
        errs[mode] = np.sqrt(((m.predict(xyz) - truth) ** 2).mean())
        base = np.sqrt(((truth - truth.mean(0)) ** 2).mean())
        assert errs[mode] < 0.7 * base, (mode, errs[mode], base)
    assert errs["projected"] < 1.25 * errs["dense"], errs


def test_lazy_fit_cli_round_trip(atlas, tmp_path):
    from napari_inrst.cli import main
    from napari_inrst.field.model import load_model

    paths, tissue, z = atlas
    out = tmp_path / "m.inrst"
    rc = main(["fit", *map(str, paths), "--z", *map(str, z), "--out", str(out), "--lazy", "--no-align",
               "--steps", "60", "--batch-size", "512", "--quiet"])
    assert rc == 0
    m = load_model(out)
    assert m.stack_meta["targets"] == "projected" and m.stack_meta["n_cells"] == 6000
    assert len(m.genes) == 80
    xyz = np.array([[tissue.width / 2, tissue.height / 2, 50.0]])
    assert np.isfinite(m.predict(xyz)).all()


def test_cpu_threads_leave_busy_cores_alone(monkeypatch):
    import napari_inrst.field.device as tr

    assert 0.0 <= tr.busy_cores(0.05) <= (__import__("os").cpu_count() or 1) + 0.01
    monkeypatch.setattr(tr, "busy_cores", lambda *a: 0.0)
    free = tr.cpu_threads(0)
    assert free == min(torch.get_num_threads(), __import__("os").cpu_count())
    monkeypatch.setattr(tr, "busy_cores", lambda *a: 64.0)
    assert tr.cpu_threads(0) == 1
    assert tr.cpu_threads(3) == 3
