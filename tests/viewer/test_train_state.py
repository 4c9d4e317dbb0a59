"""The Train widget's view model without Qt: the preview is the field's gene at z (against the
analytic truth), it follows the best validated network, the plot's phases, the status line and
the end message add up, Cancel / Resume / a changed stack, and a run in the worker-thread mode."""

import types

import numpy as np
import pytest

from napari_inrst.viewer.train_state import (
    LossSeries,
    PreviewMaker,
    TrainState,
    end_message,
    preview_contrast,
    preview_plane,
    status_line,
)


@pytest.fixture(scope="module")
def truth():
    from napari_inrst.field.api import TruthField
    from napari_inrst.synthetic.sample import SyntheticTissue

    return TruthField(SyntheticTissue(n_genes=12, depth=240.0, seed=0))


def test_preview_plane_is_the_fields_gene_at_z_nan_outside(truth):
    gene = truth.genes[3]
    img, scale, translate = preview_plane(truth, gene, 100.0, pixels=40)
    assert img.dtype == np.float32 and max(img.shape) == 40
    ii, jj = np.nonzero(np.isfinite(img))
    assert 0.3 < np.isfinite(img).mean() < 1.0  # tissue and empty slide
    xyz = np.column_stack([translate[1] + scale[1] * jj, translate[0] + scale[0] * ii, np.full(len(ii), 100.0)])
    want = truth.decode(truth.latent(xyz), [3])[:, 0]
    np.testing.assert_allclose(img[ii, jj], want, rtol=1e-5, atol=1e-6)
    out = np.column_stack([translate[1] + scale[1] * np.nonzero(~np.isfinite(img))[1],
                           translate[0] + scale[0] * np.nonzero(~np.isfinite(img))[0], np.full((~np.isfinite(img)).sum(), 100.0)])
    assert truth.occupancy(out).max() < 0.5


def test_preview_follows_the_best_network_and_new_requests(truth):
    calls = []

    def snap():
        calls.append(1)
        return truth

    pm = PreviewMaker(gene=truth.genes[0], z=50.0, every_s=0.0, pixels=16)
    assert "preview" in pm({"phase": "select", "best_val": 0.8}, snap)
    assert "preview" in pm({"phase": "select", "best_val": 0.6}, snap)
    # the final run starts untrained (no validation): its networks are not shown
    assert pm({"phase": "fit", "best_val": None}, snap) == {} and len(calls) == 2
    assert pm({"phase": "fit"}, None) == {}
    pm.update(gene=truth.genes[1], z=70.0)
    assert pm.final(truth)["preview"]["gene"] == truth.genes[1] and pm.final(truth)["preview"]["z"] == 70.0
    slow = PreviewMaker(gene=truth.genes[0], every_s=3600.0, pixels=16)
    assert "preview" in slow({"phase": "select", "best_val": 1.0}, snap)
    assert slow({"phase": "select", "best_val": 0.5}, snap) == {}  # at most every every_s
    assert PreviewMaker(gene="not-a-gene", every_s=0.0)({"phase": "a", "best_val": 1}, snap) == {}


def test_loss_series_phases_and_status_line():
    s = LossSeries()
    s.add(0, 2.0, None, phase="select", phase_start=0, total=200)
    s.add(10, 1.0, 0.9, phase="select")
    s.add(float("nan"), float("nan"), None, phase="select")  # not finite: not drawn
    s.add(100, 1.5, None, phase="fit", phase_start=100)
    assert s.phases == [(0, "select"), (100, "fit")] and s.phase_of_loss == [0, 0, 1] and s.total == 200
    assert s.val == [(10, 0.9)]
    d = dict(step=1234, total=2000, phase="select", kind="selection", phase_index=0, n_phases=2, best_val=0.61234,
             eta_s=42.4)
    assert status_line(d) == "phase 1/2 (selection) select: step 1,234/2,000, best validation RMSE 0.6123, about 42 s left"
    assert preview_contrast(np.array([0.0, 1.0, np.nan]), old=(0.0, 0.995)) is None
    assert preview_contrast(np.array([0.0, 5.0]), old=(0.0, 1.0))[1] == pytest.approx(4.975)


def _field(**prov):
    return types.SimpleNamespace(genes=["a", "b"], validation=None, provenance=dict(
        dict(steps_planned=600, steps_total_run=450, val_rmse=0.5, fit_seconds=12, device="cpu",
             kept="final fit", cancelled=False), **prov))


def test_end_message_adds_up():
    msg = end_message(_field())
    assert msg.startswith("Trained: 2 genes, validation RMSE 0.5000, 450 of 600 planned steps run (selection stops")
    assert "kept: final fit" in msg and "12 s on cpu" in msg
    assert end_message(_field(cancelled=True)).startswith("Stopped:")


def test_state_run_cancel_resume_and_a_changed_stack(tmp_path):
    st = TrainState(tmp_path / "t.ckpt")
    seen = {"status": [], "running": [], "done": []}
    st.status.connect(seen["status"].append)
    st.running.connect(seen["running"].append)
    st.done.connect(seen["done"].append)
    stack, cfg = object(), types.SimpleNamespace(ensemble=1)
    args = st.begin(stack, cfg, 300)
    assert args == (stack, cfg, None, 300, 300) and seen["running"] == [True] and st.tick() == (None, None)
    assert seen["status"][-1].startswith("Preparing (0 s): choosing the genes")
    st.take(dict(step=10, total=600, loss=1.0, phase="select", preview={"image": 1}))
    st.take(dict(step=20, total=600, loss=0.9, phase="select"))
    d, pv = st.tick(defer_preview=True)
    assert d["step"] == 20 and pv is None and seen["status"][-1] == "select: step 20/600"
    assert st.tick() == (None, {"image": 1}) and len(st.history) == 2
    st.cancel()
    assert st.should_stop() and "Stopping" in seen["status"][-1]
    st.prepared = (stack, 300, ["a", "b"])  # (the work() sets it when the genes are chosen)
    st.checkpoint.write_bytes(b"x")
    field = _field(cancelled=True)
    assert st.finish((field, None)) == (field, None) and seen["done"] == [field]
    st.ended()
    assert seen["running"] == [True, False] and st.can_resume(stack) and not st.can_resume(object())
    args = st.begin(stack, cfg, 300, resume=True)  # Resume: the checkpoint, with the genes it was trained on
    assert args == (stack, cfg, st.checkpoint, ["a", "b"], 300) and not st.should_stop()
    assert len(st.history) == 2  # the plot goes on
    st.ended()
    st.stack_changed(stack)  # z / units changed: the checkpoint no longer fits the stack
    assert not st.checkpoint.exists() and not st.can_resume(stack)


def test_thread_mode_trains_with_previews(tmp_path, sample):
    pytest.importorskip("torch")
    from napari_inrst.field import FieldConfig, Fourier
    from napari_inrst.stack.prepare import model_genes

    stack = sample[0].select([0, 1, 2])
    gene = stack.genes[int(model_genes(stack, 10)[0][0])]  # one of the 10 genes it will model
    st = TrainState(tmp_path / "t.ckpt", in_child=False)
    st.previews.update(gene=gene, z=30.0)
    st.previews.every_s = 0.0
    cfg = FieldConfig(steps=20, batch_size=512, width=32, depth=2, rank=8, val_every=10, patience=4,
                      encoding=Fourier(min_wavelength_xy_um=100.0), rc_pretrain_steps=5, threads=1,
                      checkpoint_every=10)
    gen = st.work(*st.begin(stack, cfg, 10))
    recs = []
    while True:
        try:
            recs.append(next(gen))
        except StopIteration as stop:
            field, pv = stop.value
            break
    assert len(field.genes) == 10 and st.prepared[2] == field.genes and stack.n_genes == 300  # stack untouched
    assert any("preview" in r for r in recs) and pv["gene"] == gene and st.checkpoint.exists()
