"""Model files: format 2 files (written by earlier versions) load and predict as before; format 3
round-trips; a new named group of tensors beside the network is one class and one registry line."""

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_inrst.errors import InputError  # noqa: E402
from napari_inrst.field import Fourier, HashGrid  # noqa: E402
from napari_inrst.field import model as model_mod  # noqa: E402
from napari_inrst.field.model import load_model  # noqa: E402
from napari_inrst.field.modelfile import FORMAT_VERSION  # noqa: E402

DATA = Path(__file__).parent / "data"
#: predictions of the v2 files, computed by the version that wrote them (main 456bd43)
EXPECTED = json.loads((DATA / "v2_expected.json").read_text())


@pytest.mark.parametrize("name", ["fourier", "hash"])
def test_format_2_files_load_and_predict_as_before(name, tmp_path):
    xyz = np.array(EXPECTED["xyz"])
    m = load_model(DATA / f"v2_{name}.inrst")
    np.testing.assert_allclose(m.predict(xyz), EXPECTED[name]["predict"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(m.occupancy(xyz), EXPECTED[name]["occupancy"], rtol=1e-6, atol=1e-6)
    assert isinstance(m.spec.encoding, Fourier if name == "fourier" else HashGrid)
    assert isinstance(m.config.encoding, type(m.spec.encoding)) and m.interp is not None
    # written again, it is a format-3 file with the same predictions
    m.save(tmp_path / "v3.inrst")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "v3.inrst"), framework="pt") as fh:
        meta = json.loads(fh.metadata()["meta"])
    assert meta["format_version"] == FORMAT_VERSION == 3 and "arch" not in meta
    assert meta["model"]["encoding"]["name"] == name and meta["config"]["encoding"]["name"] == name
    again = load_model(tmp_path / "v3.inrst")
    np.testing.assert_array_equal(again.predict(xyz), m.predict(xyz))
    assert again.spec == m.spec and again.config == m.config


class Offsets:
    """Test-only tensor group: one 3-vector per section (what a per-section deformation stores)."""

    def __init__(self, shifts):
        self.shifts = np.asarray(shifts, dtype=np.float32)

    def tensors(self):
        return {"shift": self.shifts}

    def meta(self):
        return {"n": int(len(self.shifts))}

    @classmethod
    def shapes(cls, m, n_genes, bad):
        if not isinstance(m.get("n"), int) or m["n"] < 1:
            bad("'offsets.n' must be a whole number ≥ 1")
        return {"shift": (m["n"], 3)}

    @classmethod
    def from_tensors(cls, t, m):
        return cls(t["shift"])


def test_an_extra_tensor_group_is_saved_and_loaded(tmp_path, monkeypatch):
    m = load_model(DATA / "v2_fourier.inrst")
    monkeypatch.setitem(model_mod.TENSOR_GROUPS, "offsets", Offsets)  # the one registry line
    m.extras["offsets"] = Offsets([[1.0, 2.0, 3.0], [0.0, 0.5, 0.0]])
    m.save(tmp_path / "x.inrst")
    again = load_model(tmp_path / "x.inrst")
    np.testing.assert_array_equal(again.extras["offsets"].shifts, m.extras["offsets"].shifts)
    assert again.interp is not None and "offsets" not in again.spec.to_dict()
    monkeypatch.delitem(model_mod.TENSOR_GROUPS, "offsets")
    with pytest.raises(InputError, match="unexpected: offsets.shift"):  # unknown tensors are refused, named
        load_model(tmp_path / "x.inrst")


def test_a_format_3_file_with_a_bad_model_is_one_clear_error(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    m = load_model(DATA / "v2_hash.inrst")
    m.save(tmp_path / "ok.inrst")
    with safe_open(str(tmp_path / "ok.inrst"), framework="pt") as fh:
        md, state = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}
    for edit, needle in ((lambda d: d["model"]["encoding"].update(levels=0), "levels"),
                         (lambda d: d["model"]["encoding"].pop("fine"), "'fine' is missing"),
                         (lambda d: d["model"].update(rank=5), "'model' asks for"),
                         (lambda d: d.update(format_version=4), "newer than this napari-inrst")):
        meta = json.loads(md["meta"])
        edit(meta)
        save_file(state, str(tmp_path / "bad.inrst"), metadata={"format": md["format"], "meta": json.dumps(meta)})
        with pytest.raises(InputError) as e:
            load_model(tmp_path / "bad.inrst")
        assert "bad.inrst" in str(e.value) and needle in str(e.value), (needle, str(e.value))
