"""Fourier features in well-spread directions ("rff"): the axis encoding's scales (finest detail,
z kept separate, annealing), deterministic from the settings + seed, saved and loaded with the
model, and no preferred axis — in its frequencies and in a fitted plane between sections."""

import json
import math

import numpy as np
import pytest

from napari_inrst.field import FieldConfig, Fourier
from napari_inrst.field.encodings import Geometry, RandomFourier, from_dict
from napari_inrst.field.encodings.rff import directions

from .conftest import TINY

GEO = Geometry(lo=(-1000.0, -750.0, -45.0), hi=(1000.0, 750.0, 45.0), spacing=50.0, z_spacing=30.0)
ONE_SECTION = Geometry(lo=(-1000.0, -750.0, -50.0), hi=(1000.0, 750.0, 50.0), spacing=50.0, z_spacing=None)


def test_rff_keeps_the_axis_encodings_scales():
    e = RandomFourier(n_scales=8, n_dirs=5, n_freq_z=0).resolve(GEO)  # directions over the sphere
    assert e.detail_um() == Fourier().resolve(GEO).detail_um() == (100.0, 75.0)
    assert e.out_dim() == 3 + 2 * 8 * 5
    k, rank = e.frequencies(seed=0)
    assert k.shape == (3, 40) and rank.shape == (40,)
    # no frequency finer than the finest wavelength along any axis; the finest level reaches it
    assert np.abs(k[:2]).max() <= 1 / 100.0 + 1e-12 and np.abs(k[2]).max() <= 1 / 75.0 + 1e-12
    finest = rank == 1.0
    assert np.allclose(np.hypot(k[0, finest] * 100.0, k[2, finest] * 75.0) ** 2 + (k[1, finest] * 100.0) ** 2, 1.0)
    # the coarsest level: half a period over the data's longer x/y side, along x/y
    assert np.hypot(k[0, rank == 0], k[1, rank == 0]).max() <= 1 / (2 * 2000.0) + 1e-12
    one = RandomFourier().resolve(ONE_SECTION)
    assert one.planar and one.detail_um() == (100.0, math.inf)
    assert np.all(one.frequencies(seed=0)[0][2] == 0)  # one section: nothing along z
    assert RandomFourier(min_wavelength_z_um=20.0).resolve(GEO).detail_um() == (100.0, 20.0)


def test_rff_with_a_z_ladder_spreads_directions_in_plane_and_keeps_z_alone():
    e = RandomFourier(n_scales=8, n_dirs=5, n_freq_z=4).resolve(GEO)
    assert e.out_dim() == 3 + 2 * (8 * 5 + 4) and e.detail_um() == (100.0, 75.0)
    k, rank = e.frequencies(seed=0)
    assert np.all(k[2, :40] == 0)  # the levels: in the x/y plane
    assert np.all(k[:2, 40:] == 0) and k[2, -1] == pytest.approx(1 / 75.0)  # z alone, up to the finest z
    np.testing.assert_allclose(rank[40:], [0, 1 / 3, 2 / 3, 1])
    assert RandomFourier(n_freq_z=4).resolve(ONE_SECTION).out_dim() == 3 + 2 * 16 * 4  # one section: no z


def test_rff_directions_are_deterministic_from_settings_and_seed():
    e = RandomFourier().resolve(GEO)
    again = from_dict(json.loads(json.dumps(e.to_dict())))
    assert again == e
    np.testing.assert_array_equal(again.frequencies(seed=3)[0], e.frequencies(seed=3)[0])
    assert not np.allclose(e.frequencies(seed=4)[0], e.frequencies(seed=3)[0])


def test_rff_frequencies_prefer_no_axis():
    e = RandomFourier().resolve(GEO)
    k, _ = e.frequencies(seed=0)
    k = k[:, np.hypot(k[0], k[1]) > 0]  # the in-plane part (not the z ladder)
    th = np.arctan2(k[1], k[0])
    # four-fold alignment |mean exp(4iθ)|: 1 for frequencies along x and y only (the axis encoding)
    assert abs(np.exp(4j * th).mean()) < 0.25
    # azimuths (mod 180°) spread over the half circle: every 30° sector holds some
    hist, _ = np.histogram(np.degrees(th) % 180.0, bins=6, range=(0, 180))
    assert hist.min() >= 4, hist
    # and in 3D (each axis in units of its level's frequency): few directions within 10° of x, y or z
    u = directions(16, 4, planar=False, seed=0).reshape(-1, 3)
    assert np.allclose(np.linalg.norm(u, axis=1), 1.0)
    assert (np.abs(u).max(axis=1) > math.cos(math.radians(10))).mean() < 0.15


def test_rff_anneals_coarse_to_fine_and_round_trips_a_model_file(tiny_stack, tmp_path):
    torch = pytest.importorskip("torch")
    from napari_inrst.field import fit_field, load_model
    from napari_inrst.field.networks import EncodingLayer

    layer = EncodingLayer(RandomFourier(n_scales=6, n_dirs=3).resolve(GEO), seed=0)
    x = torch.tensor([[123.0, -45.0, 10.0]])
    layer.anneal(0.0)
    closed = layer(x)[0, 3:3 + 18]
    layer.anneal(1.0)
    assert closed.abs().max() < 1e-6 < layer(x)[0, 3:3 + 18].abs().max()

    stack, _ = tiny_stack
    model = fit_field(stack, FieldConfig(**TINY, encoding="rff", seed=5))
    assert isinstance(model.spec.encoding, RandomFourier) and model.config.encoding == model.spec.encoding.settings()
    path = model.save(tmp_path / "rff.inrst")
    again = load_model(path)
    xyz = stack.sections[1].xyz[:50]
    np.testing.assert_array_equal(again.predict(xyz), model.predict(xyz))
    assert again.spec == model.spec and again.config == model.config
    # the stored frequencies are the ones the JSON settings + seed give
    k, _ = again.spec.encoding.frequencies(seed=again.spec.seed)
    np.testing.assert_allclose(again.net.enc.B.numpy(), 2 * np.pi * k, rtol=1e-6)


def axis_excess(img: np.ndarray, k0: int = 3) -> float:
    """FFT power on the kx ≈ 0 / ky ≈ 0 lines ÷ what those bins would hold if every ring |k| ∈
    [r, r + 1) spread its power evenly (1: isotropic, > 1: axis-aligned stripes); Hann-tapered."""
    w = img - img.mean()
    w = w / w.std() * np.outer(np.hanning(w.shape[0]), np.hanning(w.shape[1]))
    P = np.abs(np.fft.fft2(w)) ** 2
    KY, KX = np.meshgrid(np.fft.fftfreq(w.shape[0]) * w.shape[0], np.fft.fftfreq(w.shape[1]) * w.shape[1],
                         indexing="ij")
    r = np.hypot(KY, KX)
    ring, far = np.floor(r).astype(int), (r >= k0) & (r < min(w.shape) / 2)
    axis = (np.abs(KX) <= 1) | (np.abs(KY) <= 1)
    got = expect = 0.0
    for q in np.unique(ring[far]):
        sel = far & (ring == q)
        got += P[sel & axis].sum()
        expect += P[sel].sum() * (sel & axis).sum() / sel.sum()
    return got / expect


def test_axis_excess_tells_stripes_from_isotropic_texture():
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:64, 0:64]
    noise = rng.standard_normal((64, 64))
    assert 0.7 < axis_excess(noise) < 1.3
    stripes = noise + 3 * np.sin(2 * np.pi * x / 8.0) + 3 * np.sin(2 * np.pi * y / 6.0)
    assert axis_excess(stripes) > 3


def test_a_fitted_plane_between_sections_has_no_excess_axis_energy(tiny_stack):
    pytest.importorskip("torch")
    from napari_inrst.field import fit_field
    from napari_inrst.render.plane import render_plane

    stack, _ = tiny_stack
    zs = [float(s.z) for s in stack.sections]
    z = (zs[1] + zs[2]) / 2
    cfg = dict(TINY, steps=150, width=32, depth=2, rank=4, patience=20, blend=False)
    excess = {}
    for enc in ("fourier", "rff"):
        model = fit_field(stack, FieldConfig(**cfg, encoding=enc))
        planes = render_plane(model, list(model.genes), z, shape=64, masked=False)
        excess[enc] = float(np.mean([axis_excess(p[8:-8, 8:-8]) for p in planes]))
    assert excess["rff"] < 0.8 * excess["fourier"], excess
