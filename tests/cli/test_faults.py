"""Fault injection: the CLI under bad input, write failures and signals, as a hostile user drives it.

Every case: exit status 2 (or the signal's status), one line ``napari-inrst: error: <file>: …`` naming
the file, no traceback, nothing left behind. Read-only and full filesystems are simulated without
root privileges (CI runs as root, where chmod does not stop a write): ``tests/cli/_fault_runner.py``
makes every write under a folder fail with EROFS, or caps file size with RLIMIT_FSIZE (EFBIG, as a
full disk). Subprocesses are used where the process itself matters (signals, a whole run's
stderr); the rest runs in-process. One small model and three small sections serve the session.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")

from napari_inrst.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).resolve().parent / "_fault_runner.py"


@pytest.fixture(scope="session")
def fault_data(tmp_path_factory):
    """Three small sections (8 genes, ~100 spots each) and a small untrained model over their
    bounds (the CLI's input and output handling does not depend on training)."""
    from napari_inrst.synthetic.sample import make_sample

    d = tmp_path_factory.mktemp("fault_data")
    sections, _ = make_sample(n_sections=3, n_genes=8, missing=(), spot_spacing=150.0, misplace=False)
    paths = []
    for i, a in enumerate(sections):
        p = d / f"s{i}.h5ad"
        a.write_h5ad(p)
        paths.append(str(p))
    model = d / "m.inrst"
    small_model(sections[0].var_names).save(model)
    q = d / "q.csv"
    rng = np.random.default_rng(0)
    pd.DataFrame({"x": rng.uniform(0, 2000, 500), "y": rng.uniform(0, 1500, 500),
                  "z": rng.uniform(0, 60, 500)}).to_csv(q, index=False)
    return {"sections": paths, "z": ["0", "30", "60"], "model": str(model), "coords": str(q), "dir": d}


def small_model(genes, lo=(0.0, 0.0, 0.0), hi=(2000.0, 1500.0, 60.0)):
    from napari_inrst.field import FieldConfig
    from napari_inrst.field.model import FieldModel
    from napari_inrst.field.spec import ModelConfig

    genes = [str(g) for g in genes]
    lo, hi = np.asarray(lo), np.asarray(hi)
    arch = {"encoding": "fourier", "center": ((lo + hi) / 2).tolist(), "extent": (hi - lo).tolist(),
            "n_freq": [4, 4, 2], "min_wavelength": [100.0, 100.0, 60.0], "width": 16, "depth": 2,
            "rank": 3, "n_genes": len(genes), "seed": 0}
    spec = ModelConfig.from_arch(arch)
    return FieldModel(spec.build(), genes=genes, mean=np.ones(len(genes)), std=np.ones(len(genes)),
                      spec=spec, config=FieldConfig(width=16, depth=2, rank=3), normalize="log1p",
                      stack_meta={"names": ["s0", "s1", "s2"], "z": [0.0, 30.0, 60.0]}, bounds=(lo, hi))


def run_cli(fault: str, root, *argv, timeout=120):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(RUNNER), fault, str(root), *map(str, argv)],
                          env=env, capture_output=True, text=True, timeout=timeout)


def one_line_error(err: str, name) -> str:
    """The whole stderr is one error line naming ``name`` (no traceback)."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("napari-inrst: error: "), err
    assert str(name) in lines[0], err
    assert "Traceback" not in err
    return lines[0]


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in Path(folder).iterdir())


# --- defect 7: SIGTERM leaves no temporary files, in every command --------------------------------
def test_sigterm_just_before_the_rename_leaves_nothing_predict(fault_data, tmp_path):
    """In a real process: SIGTERM arrives when the temporary file is complete and about to be
    renamed; predict stops with 128 + SIGTERM, no target, no temporary file, no folder made for it."""
    res = run_cli("term-at-rename", tmp_path, "predict", fault_data["model"], "--coords", fault_data["coords"],
                  "--out", tmp_path / "out" / "p.csv")
    assert res.returncode == 128 + signal.SIGTERM, res.stderr
    assert "Traceback" not in res.stderr
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("command", ["fit", "align", "render"])
def test_sigterm_just_before_the_rename_leaves_nothing(fault_data, tmp_path, monkeypatch, command):
    """The same for fit's save, align --out and render, in-process (the handler main installs)."""
    real_replace = os.replace

    def replace(src, dst, *a, **k):
        if ".tmp" in os.path.basename(os.fspath(src)):
            os.kill(os.getpid(), signal.SIGTERM)
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    out = tmp_path / "out"
    if command == "fit":
        argv = ["fit", *fault_data["sections"], "--z", *fault_data["z"], "--no-align", "--steps", "3",
                "--quiet", "--out", out / "m.inrst"]
    elif command == "align":
        argv = ["align", *fault_data["sections"], "--quiet", "--out", out / "t.json"]
    else:
        argv = ["render", fault_data["model"], "--gene", "LayerA", "--volume", "--shape", "8",
                "--out", out / "v.zarr"]
    assert main([str(a) for a in argv]) == 128 + signal.SIGTERM
    assert leftovers(tmp_path) == []


def test_temp_registry_is_cleaned(tmp_path):
    """What a writer registers is removed by cleanup_temps (what main runs on every exit)."""
    from napari_inrst.io.atomic import cleanup_temps, registered_temps, temp_dir_beside, temp_file_beside

    f = temp_file_beside(tmp_path / "a.csv")
    d = temp_dir_beside(tmp_path / "v.zarr")
    (d / "0").mkdir()
    assert {str(f), str(d)} <= set(registered_temps())
    cleanup_temps()
    assert leftovers(tmp_path) == [] and registered_temps() == []


# --- defect 1: predict streams (bounded memory), checks free space first, writes fast -------------
def test_csv_block_formatting_matches_printf():
    from napari_inrst.io.tables import format_csv_block

    rng = np.random.default_rng(1)
    vals = np.concatenate([rng.gamma(1.0, 1.0, 3000), -rng.gamma(1.0, 1.0, 300), 10.0 ** rng.uniform(-40, 38, 3000),
                           [0.0, 1.0, 10.0, 1e5, 1e6, 999999.5, 9.999995, 1e-4, 9.99999e-5, 123456.0, 1234567.0]])
    vals = vals.astype(np.float32)
    got = format_csv_block(vals.reshape(-1, 1)).decode().splitlines()
    assert got == ["%.6g" % float(v) for v in vals]
    block = np.array([[1.5, np.nan, -2.0], [0.25, 3e-7, np.nan]], dtype=np.float32)
    assert format_csv_block(block, header=["a", "b,c", "d"]) == b'a,"b,c",d\n1.5,,-2\n0.25,3e-07,\n'


def test_predict_streams_in_blocks_and_matches_the_field(fault_data, tmp_path, monkeypatch, capsys):
    """Rows are evaluated and written a block at a time (never all at once), in order, and the file
    equals the field's values; no progress bar when stderr is not a terminal."""
    from napari_inrst.field import load_model
    from napari_inrst.field.model import FieldModel
    from napari_inrst.io import tables

    monkeypatch.setattr(tables, "BLOCK_VALUES", 800)  # 100 rows of 8 genes per block
    sizes = []
    real = FieldModel.predict

    def spy(self, xyz, *a, **k):
        sizes.append(len(xyz))
        return real(self, xyz, *a, **k)

    monkeypatch.setattr(FieldModel, "predict", spy)
    out = tmp_path / "p.csv"
    assert main(["predict", fault_data["model"], "--coords", fault_data["coords"], "--out", str(out)]) == 0
    assert "\r" not in capsys.readouterr().err
    assert max(sizes) == 100 and sum(sizes) == 500
    got = pd.read_csv(out)
    model = load_model(fault_data["model"])
    assert list(got.columns) == model.genes
    xyz = pd.read_csv(fault_data["coords"]).to_numpy()
    np.testing.assert_allclose(got.to_numpy(), real(model, xyz), rtol=1e-5, atol=1e-6)


def test_predict_checks_free_space_first(fault_data, tmp_path, monkeypatch, capsys):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    out = tmp_path / "p.csv"
    assert main(["predict", fault_data["model"], "--coords", fault_data["coords"], "--out", str(out)]) == 2
    assert "not enough disk space" in one_line_error(capsys.readouterr().err, out)
    assert leftovers(tmp_path) == []
    out = tmp_path / "p.h5ad"  # the AnnData writer checks the space too
    assert main(["predict", fault_data["model"], "--coords", fault_data["coords"], "--out", str(out)]) == 2
    assert "not enough disk space" in one_line_error(capsys.readouterr().err, out)
    assert leftovers(tmp_path) == []
    out = tmp_path / "p.parquet"  # no writer for it: refused, not CSV under a wrong name
    assert main(["predict", fault_data["model"], "--coords", fault_data["coords"], "--out", str(out)]) == 2
    assert "give a file ending in .csv" in one_line_error(capsys.readouterr().err, out)


# --- defect 2: write failures are one line, exit 2; fit checks its output before training ---------
def test_predict_on_a_read_only_filesystem(fault_data, tmp_path, monkeypatch, capsys):
    """Every write under ro/ fails with EROFS, as on a read-only mount (in-process, through the
    same patches the fault runner applies in a child)."""
    monkeypatch.syspath_prepend(str(RUNNER.parent))
    from _fault_runner import read_only

    ro = tmp_path / "ro"
    ro.mkdir()
    read_only(str(ro), monkeypatch.setattr)
    out = ro / "new" / "p.csv"
    assert main(["predict", fault_data["model"], "--coords", fault_data["coords"], "--out", str(out)]) == 2
    assert "read-only" in one_line_error(capsys.readouterr().err, out)
    monkeypatch.undo()
    assert leftovers(ro) == []


def test_predict_on_a_full_disk(fault_data, tmp_path):
    """Files cannot grow beyond 4 KiB (RLIMIT_FSIZE): the write fails midway with EFBIG."""
    res = run_cli("full", tmp_path, "predict", fault_data["model"], "--coords", fault_data["coords"],
                  "--out", tmp_path / "p.csv")
    assert res.returncode == 2
    assert "cannot write" in one_line_error(res.stderr, tmp_path / "p.csv")
    assert leftovers(tmp_path) == []


def _read_only(monkeypatch, folder):
    import errno
    import tempfile

    real = tempfile.mkstemp

    def mkstemp(*a, dir=None, **k):
        if dir is not None and Path(dir).resolve().is_relative_to(folder.resolve()):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


@pytest.mark.parametrize("target", ["out", "checkpoint"])
def test_fit_refuses_an_unwritable_output_before_training(fault_data, tmp_path, monkeypatch, capsys, target):
    import napari_inrst.field.fit as ftrain

    def no_training(*a, **k):
        raise AssertionError("fit trained although its output cannot be written")

    monkeypatch.setattr(ftrain, "fit_field", no_training)
    _read_only(monkeypatch, tmp_path / "ro")
    (tmp_path / "ro").mkdir()
    out = tmp_path / "ro" / "m.inrst" if target == "out" else tmp_path / "m.inrst"
    extra = ["--checkpoint", str(tmp_path / "ro" / "c.ckpt")] if target == "checkpoint" else []
    assert main(["fit", *fault_data["sections"], "--z", *fault_data["z"], "--no-align", "--quiet",
                 "--out", str(out), *extra]) == 2
    bad = out if target == "out" else tmp_path / "ro" / "c.ckpt"
    assert "read-only" in one_line_error(capsys.readouterr().err, bad)
    assert leftovers(tmp_path) == ["ro"] and leftovers(tmp_path / "ro") == []


def test_fit_save_on_a_full_disk(fault_data, tmp_path, monkeypatch, capsys):
    import errno

    import safetensors.torch

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    out = tmp_path / "m.inrst"
    assert main(["fit", *fault_data["sections"], "--z", *fault_data["z"], "--no-align", "--steps", "3", "--quiet",
                 "--out", str(out)]) == 2
    assert "not enough disk space" in one_line_error(capsys.readouterr().err, out)
    assert leftovers(tmp_path) == []


def test_align_out_unwritable_and_parent_a_file(fault_data, tmp_path, monkeypatch, capsys):
    (tmp_path / "ro").mkdir()
    _read_only(monkeypatch, tmp_path / "ro")
    out = tmp_path / "ro" / "t.json"
    assert main(["align", *fault_data["sections"], "--quiet", "--out", str(out)]) == 2
    assert "read-only" in one_line_error(capsys.readouterr().err, out)
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    for argv in (["align", *fault_data["sections"], "--quiet"],
                 ["predict", fault_data["model"], "--coords", fault_data["coords"]]):
        out = blocker / "sub" / "o.csv"
        assert main([*argv, "--out", str(out)]) == 2
        assert f"{blocker} is a file, not a folder" in one_line_error(capsys.readouterr().err, out)
    assert leftovers(tmp_path) == ["file.txt", "ro"] and leftovers(tmp_path / "ro") == []


# --- defect 3: duplicate gene names are refused --------------------------------------------------
def test_duplicate_gene_names_are_refused(fault_data, tmp_path, capsys):
    import anndata as ad

    a = ad.read_h5ad(fault_data["sections"][1])
    names = list(a.var_names)
    names[1] = names[0]  # e.g. LayerA twice
    a.var_names = names
    bad = tmp_path / "dup_genes.h5ad"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anndata may warn about non-unique names
        a.write_h5ad(bad)
    sections = [fault_data["sections"][0], str(bad), fault_data["sections"][2]]
    for argv in (["fit", *sections, "--z", *fault_data["z"], "--no-align", "--quiet", "--out", str(tmp_path / "m.inrst")],
                 ["align", *sections, "--quiet"]):
        assert main(argv) == 2
        line = one_line_error(capsys.readouterr().err, bad)
        assert f"1 duplicate gene names (first: '{names[0]}')" in line
    assert leftovers(tmp_path) == ["dup_genes.h5ad"]


# --- defects 4 and 5: crafted model files ----------------------------------------------------------
def _crafted(src, dst, edit=None, raw_meta=None):
    """A copy of model ``src`` with its metadata changed by ``edit(meta)`` (or replaced by ``raw_meta``)."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as fh:
        state = {k: fh.get_tensor(k) for k in fh.keys()}
        md = fh.metadata()
    meta = json.loads(md["meta"])
    if edit is not None:
        edit(meta)
    save_file(state, str(dst), metadata={"format": md["format"], "meta": raw_meta or json.dumps(meta)})
    return dst


CRAFTED = {
    "format_version_two": (lambda m: m.update(format_version="two"), "format_version must be a whole number"),
    "list_metadata": ("[1, 2, 3]", "metadata is a JSON list"),
    "transforms_not_numbers": (lambda m: m["stack_meta"].update(transforms=[[["a", 0, 0], [0, 1, 0], [0, 0, 1]]] * 3),
                               "'stack_meta.transforms[0]' is not a list of numbers"),
    "nan_bounds": (lambda m: m["bounds"][0].__setitem__(0, float("nan")), "'bounds' holds NaN"),
    "unknown_config_key": (lambda m: m["config"].update(surprise=1), "unknown field config keys: surprise"),
    "width_12000": (lambda m: m["model"].update(width=12000), "'model' asks for (12000,"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_model_metadata_is_one_line_naming_the_file(fault_data, tmp_path, monkeypatch, capsys, case):
    """Each crafted file: exit 2 and one line naming it, from every command that reads models; a
    network is never built from an arch whose shapes the file's tensors do not match (defect 5)."""
    import torch

    from napari_inrst.field.spec import ModelConfig

    edit, needle = CRAFTED[case]
    bad = tmp_path / f"{case}.inrst"
    _crafted(fault_data["model"], bad, None if isinstance(edit, str) else edit, edit if isinstance(edit, str) else None)
    real_build, built = ModelConfig.build, []

    def build(spec):
        if torch.get_default_device().type != "meta":
            built.append(spec)
        return real_build(spec)

    monkeypatch.setattr(ModelConfig, "build", build)
    for argv in (["transforms", str(bad)],
                 ["render", str(bad), "--gene", "LayerA", "--z", "30", "--out", str(tmp_path / "p.png")],
                 ["predict", str(bad), "--coords", fault_data["coords"], "--out", str(tmp_path / "p.csv")]):
        assert main(argv) == 2
        assert needle in one_line_error(capsys.readouterr().err, bad)
    assert built == []
    assert leftovers(tmp_path) == [bad.name]


# --- defect 6 (and 11: a NaN coordinate is the coordinates file's) : CSV pairs ----------------------
def _pair(tmp_path, header=True, nan=False, genes=("G1", "G2", "G3", "G4", "G5")):
    rng = np.random.default_rng(0)
    ids = [f"s{i}" for i in range(12)]
    counts = pd.DataFrame(rng.poisson(3, (12, len(genes))), index=ids, columns=list(genes))
    coords = pd.DataFrame({"x": rng.uniform(0, 100, 12), "y": rng.uniform(0, 100, 12)}, index=ids)
    if nan:
        coords.iloc[4, 1] = np.nan
    c, xy = tmp_path / "counts.csv", tmp_path / "coords.csv"
    counts.to_csv(c, header=header)
    coords.to_csv(xy, header=header)
    return c, xy


def test_csv_pair_headerless_swapped_nan_duplicate(tmp_path):
    from napari_inrst.errors import InputError
    from napari_inrst.io.readers import read_csv_pair

    c, xy = _pair(tmp_path)
    assert read_csv_pair(c, xy).shape == (12, 5)  # the good pair reads
    with pytest.raises(InputError, match=r"coords\.csv: .*swapped|counts\.csv: .*swapped"):
        read_csv_pair(xy, c)
    c, xy = _pair(tmp_path, header=False)
    with pytest.raises(InputError, match=r"counts\.csv: the first line holds numbers, not gene names"):
        read_csv_pair(c, xy)
    c, xy = _pair(tmp_path)
    lines = xy.read_text().splitlines()[1:]  # the coordinates without their header
    xy.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"coords\.csv: the first line holds numbers, not column names"):
        read_csv_pair(c, xy)
    c, xy = _pair(tmp_path, nan=True)
    with pytest.raises(InputError, match=r"coords\.csv: 1 spots have a missing or non-finite coordinate \(first: 's4'\)"):
        read_csv_pair(c, xy)
    c, xy = _pair(tmp_path, genes=("G1", "G2", "G1", "G4", "G5"))
    with pytest.raises(InputError, match=r"counts\.csv: 1 duplicate gene names \(first: 'G1'\)"):
        read_csv_pair(c, xy)


# --- defect 10: the stack checks run whether or not it is aligned ------------------------------------
@pytest.mark.parametrize("flaw", ["few_spots", "collinear", "two_genes"])
def test_no_align_still_refuses_a_bad_stack(fault_data, tmp_path, capsys, flaw):
    import anndata as ad

    a = ad.read_h5ad(fault_data["sections"][1])
    if flaw == "few_spots":
        a = a[:7].copy()
        needle = "has 7 spots; a section of a stack needs at least 10"
    elif flaw == "collinear":
        t = np.linspace(0, 1, a.n_obs)
        a.obsm["spatial"] = np.column_stack([1000 * t, 500 * t + 3])
        needle = "has collinear coordinates"
    else:
        a = a[:, :2].copy()
        needle = "only 2 shared genes; a stack needs at least 3"
    bad = tmp_path / "bad.h5ad"
    a.write_h5ad(bad)
    sections = [fault_data["sections"][0], str(bad), fault_data["sections"][2]]
    for lazy in ([], ["--lazy"]):
        assert main(["fit", *sections, "--z", *fault_data["z"], "--no-align", "--quiet", *lazy,
                     "--out", str(tmp_path / "m.inrst")]) == 2
        line = one_line_error(capsys.readouterr().err, "bad.h5ad")
        assert needle in line
    assert leftovers(tmp_path) == ["bad.h5ad"]


# --- defect 9: coordinates centred in float64 before the network's float32 ------------------------------
def test_far_offset_stack_fits_like_the_same_stack_at_the_origin(fault_data, tmp_path, capsys):
    """+1e12 µm on x, y and z: centred in float64, the field equals the one fitted at the origin
    (float32 before centring collapsed the tissue to one point: a constant field)."""
    import anndata as ad

    from napari_inrst.field import load_model

    off = 1e12
    moved = []
    for i, p in enumerate(fault_data["sections"]):
        a = ad.read_h5ad(p)
        a.obsm["spatial"] = a.obsm["spatial"] + off
        moved.append(tmp_path / f"far{i}.h5ad")
        a.write_h5ad(moved[-1])
    common = ["--no-align", "--quiet", "--steps", "3", "--seed", "1"]
    assert main(["fit", *fault_data["sections"], "--z", "0", "30", "60", *common, "--out", str(tmp_path / "a.inrst")]) == 0
    assert main(["fit", *map(str, moved), "--z", str(off), str(off + 30), str(off + 60), *common,
                 "--out", str(tmp_path / "b.inrst")]) == 0
    near, far = load_model(tmp_path / "a.inrst"), load_model(tmp_path / "b.inrst")
    q = pd.read_csv(fault_data["coords"]).to_numpy()
    pn, pf = near.predict(q), far.predict(q + off)
    assert pf.std(axis=0).min() > 1e-3  # not a constant field
    np.testing.assert_allclose(pf, pn, atol=0.02 * float(np.abs(pn).max()))


def test_unrepresentable_coordinates_are_refused(fault_data, tmp_path, capsys):
    import anndata as ad

    a = ad.read_h5ad(fault_data["sections"][1])
    a.obsm["spatial"] = a.obsm["spatial"] + 1e17  # float64 resolves 16 µm there
    bad = tmp_path / "far.h5ad"
    a.write_h5ad(bad)
    sections = [fault_data["sections"][0], str(bad), fault_data["sections"][2]]
    assert main(["fit", *sections, "--z", *fault_data["z"], "--no-align", "--quiet", "--out", str(tmp_path / "m.inrst")]) == 2
    assert "resolved only to 16 µm" in one_line_error(capsys.readouterr().err, bad)
    # z that only float64 tells apart, far from each other in float32 after centring: accepted
    # by the check; z that collapse even after centring: refused
    from napari_inrst.errors import InputError
    from napari_inrst.io.validate import validate_z_precision

    validate_z_precision([1e12, 1.00000001e12], ["a", "b"])
    with pytest.raises(InputError, match="b: its z .* cannot be told apart from that of a"):
        validate_z_precision([0.0, 1e-9, 1e6], ["a", "b", "c"])


def test_render_grid_points_keep_their_precision_far_from_the_origin():
    from napari_inrst.render.grids import PlaneGrid

    near = PlaneGrid(30.0, 0.0, 0.0, 1.0, 1.0, 4, 4).points()
    far = PlaneGrid(1e12 + 30.0, 1e12, 1e12, 1.0, 1.0, 4, 4).points()
    assert near.dtype == np.float32  # the usual case stays light
    np.testing.assert_array_equal(far - 1e12, near)


# --- defect 11: the smaller ones -------------------------------------------------------------------------
def test_far_queries_are_clamped_to_the_field_box(fault_data):
    """Unmasked predictions far outside the tissue take the value at the edge of the field's box
    (bounds + 5 %), never the runaway values of the network's linear terms (~1e26 before)."""
    from napari_inrst.field import load_model

    m = load_model(fault_data["model"])
    lo, hi = m.bounds()
    edge = hi + 0.05 * (hi - lo) + 1e-6
    far = np.array([[1e25, 700.0, 30.0], [-1e12, -1e12, 1e9]])
    at_box = np.array([[edge[0], 700.0, 30.0], [lo[0] - 0.05 * (hi - lo)[0] - 1e-6, lo[1] - 0.05 * (hi - lo)[1] - 1e-6, edge[2]]])
    np.testing.assert_allclose(m.predict(far), m.predict(at_box), rtol=1e-5, atol=1e-6)
    inside = np.array([[1000.0, 700.0, 30.0]])
    np.testing.assert_array_equal(m.predict(inside), m.predict(inside, clamp=False))  # inside: untouched
    assert np.abs(m.predict(far, clamp=False)).max() > 1e3 * np.abs(m.predict(far)).max()  # what clamping avoids


def test_usage_errors_are_one_line(fault_data, tmp_path, capsys):
    for argv, needle in ((["render", fault_data["model"], "--gene", "LayerA", "--z", "abc", "--out", "x.png"],
                          "argument --z: invalid float value: 'abc'"),
                         (["predict", fault_data["model"], "--out", "x.csv"], "--coords")):
        with pytest.raises(SystemExit) as ex:
            main(argv)
        assert ex.value.code == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and needle in err and "usage:" not in err
    for z, needle in (("nan", "--z must be a finite number of µm, got nan"), ("inf", "got inf")):
        assert main(["render", fault_data["model"], "--gene", "LayerA", "--z", z, "--out", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err
        assert needle in err and "np.float64" not in err and len(err.strip().splitlines()) == 1
    assert leftovers(tmp_path) == []


def test_failed_render_removes_the_folders_it_made(fault_data, tmp_path, monkeypatch, capsys):
    import errno

    import napari_inrst.render.volume as vol

    real = vol.stream_volume

    def fails_midway(*a, **k):
        for i, item in enumerate(real(*a, **k)):
            if i == 1:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            yield item

    monkeypatch.setattr(vol, "stream_volume", fails_midway)
    out = tmp_path / "new" / "deeper" / "v.zarr"
    assert main(["render", fault_data["model"], "--gene", "LayerA", "--volume", "--shape", "16", "--slab-mb", "0.001",
                 "--out", str(out)]) == 2
    assert "not enough disk space" in one_line_error(capsys.readouterr().err, out)
    assert leftovers(tmp_path) == []


def test_overwrite_keeps_the_mode_and_writes_through_a_symlink(fault_data, tmp_path):
    target = tmp_path / "real.csv"
    target.write_text("old\n")
    os.chmod(target, 0o640)
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    assert main(["predict", fault_data["model"], "--coords", fault_data["coords"], "--out", str(link), "--quiet"]) == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.stat().st_mode & 0o777 == 0o640
    assert len(pd.read_csv(target)) == 500
    assert leftovers(tmp_path) == ["link.csv", "real.csv"]


def test_replacing_a_zarr_folder_is_atomic_under_concurrent_writers(tmp_path):
    """Many writers replacing the same folder at once: each rename succeeds (no ENOTEMPTY), the
    folder is always one writer's complete result, and no old copy is left behind."""
    import threading

    from napari_inrst.io.atomic import replace_dir, temp_dir_beside

    path = tmp_path / "v.zarr"
    errors = []

    def writer(i):
        try:
            for _ in range(10):
                tmp = temp_dir_beside(path)
                (tmp / "done").write_text(str(i))
                replace_dir(tmp, path)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert leftovers(tmp_path) == ["v.zarr"] and leftovers(path) == ["done"]
