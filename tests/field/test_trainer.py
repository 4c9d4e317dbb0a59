"""One training run (Trainer) and its parts: schedules, weight average, checkpoints."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_inrst.errors import InputError  # noqa: E402
from napari_inrst.field import FieldConfig  # noqa: E402
from napari_inrst.field.checkpoint import Checkpointer, load_checkpoint  # noqa: E402
from napari_inrst.field.data import StackData  # noqa: E402
from napari_inrst.field.ema import EMA  # noqa: E402
from napari_inrst.field.schedule import AnnealSchedule, LRSchedule  # noqa: E402
from napari_inrst.field.spec import ModelConfig  # noqa: E402
from napari_inrst.field.trainer import Progress, Trainer  # noqa: E402

from .conftest import TINY  # noqa: E402


def test_learning_rate_warms_up_then_decays_to_five_percent():
    lr = LRSchedule(base=1.0, total=1000)
    assert lr(0) == pytest.approx(1 / 50) and lr(49) == pytest.approx(1.0)  # 50 warm-up steps
    after = [lr(s) for s in range(50, 1000)]
    assert all(a >= b for a, b in zip(after, after[1:])) and lr(999) == pytest.approx(0.05, abs=1e-4)
    assert LRSchedule(1.0, 40)(0) == pytest.approx(0.5)  # short runs: total / 20 warm-up steps


def test_anneal_schedule_opens_over_its_fraction_of_the_run():
    a = AnnealSchedule.of(0.3, 100)
    assert a.steps == 30 and a.progress(0) == pytest.approx(1 / 30) and a.progress(29) == 1.0
    assert not a.opened(29) and a.opened(30)
    assert a.kept(15) == pytest.approx(0.5) and a.kept(0) == 1.0
    assert AnnealSchedule.of(0.0, 100).progress(0) == 1.0


def test_ema_averages_with_a_short_memory_early_on():
    net = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(0.0)
    ema = EMA(net, 0.99)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema.update(0)  # decay min(0.99, 1/10): the average moves 90 % toward the weights
    torch.testing.assert_close(ema.net.weight, torch.full((1, 2), 0.9))
    off = EMA(net, 0.0)
    assert off.net is net and off.state_dict() == {}


def _data(stack, cfg):
    return StackData(stack, cfg, sections=[0, 1, 2])


def test_trainer_keeps_the_best_validated_weights_and_is_repeatable(tiny_stack):
    stack, _ = tiny_stack
    cfg = FieldConfig(**{**TINY, "steps": 30})
    data = _data(stack, cfg)
    spec = ModelConfig.for_data(cfg, data)
    runs = []
    for _ in range(2):
        t = Trainer(data, cfg, spec, cfg.steps, torch.device("cpu"), clock=Progress(total=30))
        runs.append((t, *_records(t.run())))
    (t, records, a), (_, _, b) = runs
    timing = ("t", "samples_per_s")
    assert a.best_val == b.best_val
    assert [{k: v for k, v in h.items() if k not in timing} for h in a.history] == \
        [{k: v for k, v in h.items() if k not in timing} for h in b.history]
    assert all(torch.equal(x, y) for x, y in zip(a.net.state_dict().values(), b.net.state_dict().values()))
    vals = [h["val"] for h in a.history if "val" in h]
    assert a.best_val == pytest.approx(min(vals)) and a.best_step % cfg.val_every == 0
    t.ema.net.load_state_dict(a.net.state_dict())  # the kept weights validate to the best score
    assert t.validate() == pytest.approx(a.best_val, rel=1e-6)
    assert {"step", "total", "loss", "losses", "val", "phase"} <= set(records[0]) and records[-1]["total"] == 30


def test_trainer_stops_at_the_given_step_and_on_request(tiny_stack):
    stack, _ = tiny_stack
    cfg = FieldConfig(**{**TINY, "steps": 40})
    data = _data(stack, cfg)
    spec = ModelConfig.for_data(cfg, data)
    rows = (np.arange(data.n), np.arange(0))
    t = Trainer(data, cfg, spec, 40, torch.device("cpu"), rows=rows, stop_at=12)
    res = _drain(t.run())
    assert res.history[-1]["step"] == 12 and res.best_step == 12 and not res.stopped
    assert math.isnan(t.validate())  # no validation rows
    n = [0]

    def stop():
        n[0] += 1
        return n[0] > 25  # asked before each step

    res = _drain(Trainer(data, cfg, spec, 40, torch.device("cpu"), should_stop=stop).run())
    assert res.stopped and res.history[-1]["step"] == 20  # the last record before the stop (every 10 steps)


def test_checkpoint_resume_continues_the_same_run(tiny_stack, tmp_path):
    stack, _ = tiny_stack
    cfg = FieldConfig(**{**TINY, "steps": 30, "patience": 100})
    data = _data(stack, cfg)
    spec = ModelConfig.for_data(cfg, data)
    cpu = torch.device("cpu")
    full = _drain(Trainer(data, cfg, spec, 30, cpu).run())
    ck = Checkpointer(tmp_path / "c.ckpt", every=10, meta={"phase": "select"})
    assert ck.due(10) and not ck.due(15)
    first = Trainer(data, cfg, spec, 30, cpu, checkpoint=ck, stop_at=20)
    _drain(first.run())
    state = load_checkpoint(tmp_path / "c.ckpt")
    assert state["step"] == 20 and state["meta"] == {"phase": "select"}
    records, res = _records(Trainer(data, cfg, spec, 30, cpu, resume=state).run())
    # continued from step 20 (not from 0) to the end of the same schedule, its history kept
    assert [r["step"] for r in records] == [30] and [h["step"] for h in res.history] == [10, 20, 30]
    assert res.best_val == pytest.approx(min(h["val"] for h in res.history))
    assert [h["val"] for h in res.history[:2]] == [h["val"] for h in full.history[:2]]
    (tmp_path / "x.ckpt").write_bytes(b"nonsense")
    with pytest.raises(InputError, match="x.ckpt"):
        load_checkpoint(tmp_path / "x.ckpt")


def _records(gen):
    """(progress records, result) of a run."""
    out = []
    while True:
        try:
            out.append(next(gen))
        except StopIteration as stop:
            return out, stop.value


def _drain(gen):
    return _records(gen)[1]
