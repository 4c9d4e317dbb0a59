"""Multi-process training: ``torchrun --nproc_per_node 2 -m napari_inrst.cli.distributed`` with the gloo
backend on CPU gives the same kind of model file as ``fit``, with processes in agreement."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]


def _torchrun(args, tmp_path, nproc=2, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--master_port", str(29500 + os.getpid() % 1000), "-m", "napari_inrst.cli.distributed", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp_path, env=env)


@pytest.fixture(scope="module")
def sections(tmp_path_factory):
    from napari_inrst.synthetic.sample import write_sample

    d = tmp_path_factory.mktemp("sample")
    paths = write_sample(d, n_genes=40)
    return [str(p) for p in paths[:5]], ["0", "30", "60", "120", "150"]


def test_two_gloo_processes_train_one_model_like_fit(sections, tmp_path):
    from napari_inrst.cli import main
    from napari_inrst.field.model import load_model
    from napari_inrst.synthetic.sample import SyntheticTissue

    paths, z = sections
    out = tmp_path / "ddp.inrst"
    r = _torchrun([*paths, "--z", *z, "--out", str(out), "--steps", "120", "--batch-size", "512",
                   "--backend", "gloo", "--device", "cpu"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "training on 2 process(es)" in r.stderr
    m = load_model(out)
    assert m.provenance["processes"] == 2
    assert m.provenance["processes_agree"] is True
    assert len(m.genes) == 40 and m.provenance["targets"] == "dense"
    # process 0 aligned the sections and every process trained on them: the same transforms as
    # `napari-inrst align` on the same files
    t_json = tmp_path / "t.json"
    assert main(["align", *paths, "--z", *z, "--out", str(t_json)]) == 0
    want = json.loads(t_json.read_text())
    assert [t["section"] for t in m.transforms()] == [t["section"] for t in want]
    for got, exp in zip(m.transforms(), want):
        np.testing.assert_allclose(got["matrix"], exp["matrix"], atol=1e-6)
    # and the field it learned follows the analytic truth between the sections
    tissue = SyntheticTissue(n_genes=40, depth=270.0, seed=0)
    xy = tissue.spots(90.0, 60.0, np.random.default_rng(1))
    xyz = np.column_stack([xy, np.full(len(xy), 90.0)])
    truth = tissue.truth(xyz, m.genes)
    pred = m.predict(xyz)
    err, spread = np.sqrt(((pred - truth) ** 2).mean()), np.sqrt(((truth - truth.mean(0)) ** 2).mean())
    assert err < 0.85 * spread, (err, spread)


def test_bad_input_exits_2_with_one_line_and_writes_nothing(sections, tmp_path):
    paths, z = sections
    out = tmp_path / "never.inrst"
    r = _torchrun([*paths, "--z", *z[:-1], "--out", str(out), "--steps", "5", "--backend", "gloo"], tmp_path)
    assert r.returncode != 0
    assert "sections but 4 values after --z" in r.stderr
    assert not out.exists()
    assert not list(tmp_path.glob(".never.inrst*"))
