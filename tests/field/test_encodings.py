"""Encodings: the interface (output size, finest detail, annealing, JSON), the registry, and a
new encoding registered in one place used end to end (fit, save, load, render)."""

import json
import math
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from napari_inrst.errors import InputError
from napari_inrst.field import FieldConfig, Fourier, HashGrid, encodings
from napari_inrst.field.encodings import Encoding, Geometry
from napari_inrst.field.encodings.base import resolved

from .conftest import TINY

GEO = Geometry(lo=(-1000.0, -750.0, -45.0), hi=(1000.0, 750.0, 45.0), spacing=50.0, z_spacing=30.0)
ONE_SECTION = Geometry(lo=(-1000.0, -750.0, -50.0), hi=(1000.0, 750.0, 50.0), spacing=50.0, z_spacing=None)


def test_package_import_and_configs_stay_torch_free():
    code = ("import sys, napari_inrst.field as f; from napari_inrst.field.spec import ModelConfig; "
            "f.FieldConfig(encoding='hash').to_json(); f.Fourier().resolve(f.encodings.Geometry("
            "(0, 0, 0), (1, 1, 1), 1.0, 1.0)).detail_um(); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_fourier_resolves_its_scales_from_the_data_spacings():
    e = Fourier().resolve(GEO)
    assert e.min_wavelength == (100.0, 100.0, 75.0)  # 2 × spot spacing, 2.5 × section spacing
    assert e.detail_um() == (100.0, 75.0)
    assert e.out_dim() == 3 + 2 * (16 + 16 + 4)
    one = Fourier().resolve(ONE_SECTION)
    assert one.n_freq == (16, 16, 0) and one.detail_um() == (100.0, math.inf)  # nothing resolved along z
    assert Fourier(min_wavelength_xy_um=40.0).resolve(GEO).detail_um()[0] == 40.0  # explicit lengths win
    assert e.settings() == Fourier(min_wavelength_xy_um=100.0, min_wavelength_z_um=75.0)  # what a recipe stores


def test_hash_grid_resolves_its_finest_cells():
    e = HashGrid(levels=4).resolve(GEO)
    assert e.detail_um() == (50.0, 37.5)  # the spot spacing; 1.25 × the section spacing
    assert e.out_dim() == 4 * 2
    assert e.lo[0] == pytest.approx(-1100.0) and e.hi[2] == pytest.approx(49.5)  # the data's box + 5 %
    assert HashGrid(finest_um=20.0).resolve(GEO).detail_um()[0] == 20.0


@pytest.mark.parametrize("name", encodings.names())
def test_every_registered_encoding_round_trips_json_and_matches_its_output_size(name):
    torch = pytest.importorskip("torch")
    from napari_inrst.field.networks import EncodingLayer

    e = encodings.get(name)().resolve(GEO)
    again = encodings.from_dict(json.loads(json.dumps(e.to_dict())))
    assert again == e and again.is_resolved() and not e.settings().is_resolved()
    layer = EncodingLayer(e, seed=0)
    out = layer(torch.tensor([[0.0, 0.0, 0.0], [900.0, -700.0, 40.0]]))
    assert out.shape == (2, e.out_dim()) and torch.isfinite(out).all()


def test_fourier_anneals_coarse_to_fine():
    torch = pytest.importorskip("torch")
    from napari_inrst.field.networks import EncodingLayer

    e = Fourier(n_freq_xy=8, n_freq_z=2).resolve(GEO)
    layer = EncodingLayer(e)
    x = torch.tensor([[123.0, -45.0, 10.0]])
    n = 8 + 8 + 2
    layer.anneal(0.0)
    closed = layer(x)[0, 3:3 + n]  # sin features
    layer.anneal(1.0)
    opened = layer(x)[0, 3:3 + n]
    assert closed.abs().max() < 1e-6 < opened.abs().max()  # only the coarsest would show at 0; none at all here


def test_registry_and_config_refuse_unknown_encodings_and_settings():
    with pytest.raises(InputError, match="encoding must be one of"):
        FieldConfig(encoding="wavelet").validate()
    with pytest.raises(InputError, match="unknown hash encoding keys: levelz"):
        encodings.from_dict({"name": "hash", "levelz": 3})
    with pytest.raises(InputError, match="levels"):
        FieldConfig(encoding=HashGrid(levels=0)).validate()
    with pytest.raises(InputError, match="min_wavelength_xy_um"):
        FieldConfig(encoding=Fourier(min_wavelength_xy_um=-5.0)).validate()


def test_field_config_nests_the_encoding_and_reads_flat_format_2_configs():
    cfg = FieldConfig(encoding="hash")
    assert cfg.encoding == HashGrid()
    d = cfg.to_dict()
    assert d["encoding"]["name"] == "hash" and "hash_levels" not in d
    assert FieldConfig.from_json(cfg.to_json()) == cfg
    old = {"encoding": "hash", "hash_levels": 6, "hash_log2_table": 12, "min_wavelength_z_um": 60.0,
           "n_freq_xy": 16, "wavelength_candidates": [2.0], "steps": 99}
    up = FieldConfig.from_dict(old)
    assert up.encoding == HashGrid(levels=6, log2_table=12, finest_z_um=30.0) and up.steps == 99
    old_f = FieldConfig.from_dict({"encoding": "fourier", "n_freq_xy": 8, "min_wavelength_xy_um": 70.0})
    assert old_f.encoding == Fourier(n_freq_xy=8, min_wavelength_xy_um=70.0)


# --- a new encoding: one class, one registry line -------------------------------------------
@dataclass
class Plain(Encoding):
    """Test-only: the coordinates scaled to [-1, 1] over the data (no frequencies)."""

    name = "plain"
    detail_spacings: float = 3.0
    center: tuple | None = resolved()
    halfext: tuple | None = resolved()
    detail: float | None = resolved()

    def resolve(self, g):
        return Plain(self.detail_spacings, center=tuple((a + b) / 2 for a, b in zip(g.lo, g.hi)),
                     halfext=tuple(max((b - a) / 2, 1e-6) for a, b in zip(g.lo, g.hi)),
                     detail=self.detail_spacings * g.spacing)

    def out_dim(self):
        return 3

    def detail_um(self):
        return self.detail, self.detail

    def init(self, m, seed):
        import torch

        m.register_buffer("center", torch.tensor(self.center, dtype=torch.float32))
        m.register_buffer("halfext", torch.tensor(self.halfext, dtype=torch.float32))

    def forward(self, m, xyz):
        return (xyz - m.center) / m.halfext


def test_a_new_encoding_registered_in_one_place_is_used_end_to_end(tiny_stack, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from napari_inrst.field import fit_field, load_model
    from napari_inrst.render.plane import render_plane
    from napari_inrst.render.resample import field_detail_um

    monkeypatch.setitem(encodings.REGISTRY, Plain.name, Plain)  # the one registry line
    stack, tissue = tiny_stack
    model = fit_field(stack, FieldConfig(**TINY, encoding="plain", blend=False))  # the network alone: band-limited
    assert isinstance(model.spec.encoding, Plain) and model.net.enc.n_out == 3
    spacing = model.stack_meta["spot_spacing_um"]
    assert field_detail_um(model) == pytest.approx((3 * spacing, 3 * spacing))  # the renderer asks the encoding
    path = model.save(tmp_path / "plain.inrst")
    again = load_model(path)
    xyz = stack.sections[1].xyz[:50]
    np.testing.assert_array_equal(again.predict(xyz), model.predict(xyz))
    assert again.config.encoding == Plain()
    z = float(stack.sections[1].z)
    exact = render_plane(again, "LayerA", z, shape=(40, 60), masked=False)
    band = render_plane(again, "LayerA", z, shape=(40, 60), masked=False, oversample=4)  # sampled at detail / 4
    assert band.shape == (40, 60) and np.isfinite(band).all()
    assert np.abs(band - exact).max() < 0.02 * np.ptp(exact)
    monkeypatch.delitem(encodings.REGISTRY, Plain.name)
    with pytest.raises(InputError) as e:  # a file of an encoding this installation does not have
        load_model(path)
    assert "plain.inrst" in str(e.value) and "encoding must be one of" in str(e.value)
