"""Training in a child process (field/background.py): the same model as in-process, progress
streamed, Cancel keeps the best weights, a lower CPU priority, errors raised in the parent as
such, nothing left behind."""

import os

import numpy as np
import pytest

pytest.importorskip("torch")

from napari_inrst.errors import InputError
from napari_inrst.field import FieldConfig, fit_field
from napari_inrst.field.background import ChildFit

from .conftest import TINY  # noqa: E402

#: the tests' quick recipe (tests/field/conftest.py), with a checkpoint every 10 steps
FAST = dict(TINY, checkpoint_every=10)


def _run(fit, stop_after=None, **kw):
    records = []
    if stop_after is not None:
        kw["should_stop"] = lambda: len(records) >= stop_after
    gen = fit.run(**kw)
    while True:
        try:
            records.append(next(gen))
        except StopIteration as stop:
            return stop.value, records


def test_child_trains_the_same_model_as_in_process_at_lower_priority(tiny_stack):
    from napari_inrst.viewer.train_state import PreviewMaker

    stack, tissue = tiny_stack
    cfg = FieldConfig(**FAST)
    here = fit_field(stack, cfg)
    # (niceness 1 here, not the default CHILD_NICE: on a machine loaded by other work a child at
    # niceness 10 is starved and the test would take minutes; the mechanism is the same)
    fit = ChildFit(stack, cfg, observer=PreviewMaker(gene=stack.genes[0], z=30.0, every_s=0.0, pixels=16), nice=1)
    statuses = []
    field, records = _run(fit, on_status=statuses.append)
    xyz = np.column_stack([tissue.spots(30.0, 60.0, np.random.default_rng(0))[:100], np.full(100, 30.0)])
    np.testing.assert_array_equal(field.predict(xyz), here.predict(xyz))  # same seed, same weights
    assert field.provenance["steps_planned"] == here.provenance["steps_planned"]
    assert [r["step"] for r in records] == sorted(r["step"] for r in records) and records[-1]["total"] == 80
    assert "snapshot" not in records[0]  # (a closure over the child's network does not cross)
    assert any("reading the training data" in s for s in statuses)
    # the observer ran in the child: previews of the gene at z, and the final one
    pv = [r["preview"] for r in records if "preview" in r] + [fit.extras["preview"]]
    assert pv and all(p["gene"] == stack.genes[0] and p["z"] == 30.0 and p["image"].shape[1] == 16 for p in pv)
    info = fit.child_info
    assert info["pid"] != os.getpid() and info["nice"] == min(19, os.nice(0) + 1)
    assert not fit.model_path.parent.exists()  # its folder is removed


def test_child_cancel_keeps_best_and_a_checkpoint_errors_come_back_as_input_errors(tiny_stack, tmp_path):
    stack, _ = tiny_stack
    ckpt = tmp_path / "fit.ckpt"
    cfg = FieldConfig(**{**FAST, "steps": 100000, "patience": 1000})
    field, _ = _run(ChildFit(stack, cfg, checkpoint=ckpt, nice=1), stop_after=3)
    prov = field.provenance
    assert prov["cancelled"] and 0 < prov["steps_run"] < 100000 and ckpt.exists()
    assert "best validated weights" in prov["kept"]
    # (Resume through a child process: tests/_qt/test_train_widget.py)
    # bad input in the child is an InputError here, with its message
    with pytest.raises(InputError, match="lacks 1 gene.*NOPE"):
        _run(ChildFit(stack, cfg, genes=[stack.genes[0], "NOPE"], nice=1))
