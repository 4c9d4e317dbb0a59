"""Targets scaled by each gene's measurement noise (``standardize="noise"``): the noise estimate
against known noise, the dense and streamed (projected) targets agreeing, and a fit that stores
and reloads the choice."""

import numpy as np
import pytest

from napari_inrst.field.data import gene_scale, neighbour_noise


def _grid(n=50):
    g = np.arange(n, dtype=np.float64)
    return np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)


def test_neighbour_noise_recovers_known_noise_and_stays_within_each_section():
    """Smooth expression (wavelength 40 spacings) plus Gaussian noise of known sd per gene: the
    estimate is the noise variance (the signal adds little), and a second section at the same
    positions but a very different level does not leak in (neighbours only within a section)."""
    rng = np.random.default_rng(0)
    xy = _grid()
    sd = np.array([0.05, 0.3, 1.0, 3.0])
    signal = 2.0 * np.sin(2 * np.pi * xy[:, :1] / 40.0) * np.ones((1, len(sd)))
    a = signal + rng.normal(size=signal.shape) * sd
    b = signal + 100.0 + rng.normal(size=signal.shape) * sd  # same xy, level +100
    est = np.sqrt(neighbour_noise(np.concatenate([a, b]), np.concatenate([xy, xy]), [len(xy), len(xy)]))
    np.testing.assert_allclose(est[1:], sd[1:], rtol=0.08)
    assert est[0] < 0.15  # signal between neighbours adds a little where the noise is tiny: an upper bound
    # the estimate scales with the values (unit-free in the coordinates: xy × 1000 changes nothing)
    np.testing.assert_allclose(neighbour_noise(a * 3, xy * 1000, [len(xy)]), 9 * neighbour_noise(a, xy, [len(xy)]),
                               rtol=1e-6)


def test_gene_scale_noise_is_capped_by_the_genes_spread():
    mean, std = gene_scale(np.zeros(3), np.array([1.0, 2.0, 0.0]), "noise", np.array([0.5, 5.0, 0.0]))
    np.testing.assert_allclose(std, [0.5, 2.0, 1.0])  # ≤ the gene's sd; no spread → 1


def test_noise_targets_dense_and_projected_agree_and_fit_round_trips(tiny_stack, tmp_path):
    pytest.importorskip("torch")
    from napari_inrst.field import FieldConfig
    from napari_inrst.field.data import ProjectedData, StackData
    from napari_inrst.field.fit import fit_field
    from napari_inrst.field.model import load_model

    from .conftest import TINY

    stack, tissue = tiny_stack
    cfg = FieldConfig(**TINY, standardize="noise")
    dense = StackData(stack, cfg)
    z = StackData(stack, cfg.replace(standardize=True))
    assert np.all(dense.std <= z.std + 1e-6) and np.any(dense.std < 0.9 * z.std)  # noise < total spread
    proj = ProjectedData(stack, cfg, rank=4, pca_rows=10 ** 6)  # every cell in a patch: the same estimate
    np.testing.assert_allclose(proj.std, dense.std, rtol=1e-4)
    few = ProjectedData(stack, cfg, rank=4, pca_rows=200)  # a few patches of neighbours
    assert np.median(np.abs(few.std / dense.std - 1)) < 0.25
    model = fit_field(stack, cfg)
    assert model.config.standardize == "noise"
    model.save(tmp_path / "m.inrst")
    again = load_model(tmp_path / "m.inrst")
    assert again.config.standardize == "noise"
    xyz = np.column_stack([stack.sections[1].xy, np.full(stack.sections[1].n_obs, stack.sections[1].z)])
    np.testing.assert_allclose(again.predict(xyz), model.predict(xyz), rtol=1e-4, atol=1e-5)
