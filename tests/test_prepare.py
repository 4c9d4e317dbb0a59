"""Preparing a stack for a field (one rule for the CLI and the widgets) and how a fit reports its
phases: the plan is fixed up front, Cancel keeps the best weights of any phase."""

import numpy as np
import pytest

from napari_inrst.prepare import DEFAULT_GENE_CAP, model_genes, prepare_for_field


@pytest.fixture(scope="module")
def aligned(sample):
    stack, tissue = sample  # the session's synthetic sample (300 genes), copied and put in place
    stack = stack.select(range(len(stack)))
    stack.set_transforms([s.adata.uns["truth_matrix"] for s in stack.sections])
    return stack, tissue


def test_prepare_copy_leaves_the_viewer_stack_whole_and_matches_the_cli_rule(aligned):
    stack, _ = aligned
    before = [s.adata for s in stack.sections]
    small = prepare_for_field(stack, 20, copy=True)
    assert stack.n_genes == 300 and all(s.adata is a for s, a in zip(stack.sections, before))  # untouched
    assert small.n_genes == 20 and small.report["gene_selection"].endswith("20 of 300")
    keep, _ = model_genes(stack, 20)
    assert small.genes == [stack.genes[k] for k in keep]  # the same genes `fit --genes 20` models
    k = stack.gene_index(small.genes[3])
    np.testing.assert_array_equal(small[2].X[:, 3], stack[2].X[:, k])
    # the default: every gene up to the cap (here all 300)
    assert model_genes(stack, None) is None and DEFAULT_GENE_CAP == 2000
    assert prepare_for_field(stack, None, copy=True).n_genes == 300


def test_plan_is_fixed_up_front_and_cancel_keeps_the_best_phase(aligned):
    pytest.importorskip("torch")
    from napari_inrst.field import FieldConfig
    from napari_inrst.field.train import iter_fit

    stack, _ = aligned
    cfg = FieldConfig(steps=40, batch_size=512, width=32, depth=2, rank=8, val_every=10, patience=50,
                      rc_pretrain_steps=10, threads=1, ensemble=2, wavelength_candidates=(1.0, 4.0))
    seen, status = [], []

    def stop():  # cancel at the first report of the first ensemble member (after both probes)
        return any(d.get("kind") == "members" for d in seen)

    gen = iter_fit(stack, cfg, sections=[0, 2, 4], should_stop=stop, on_status=status.append)
    while True:
        try:
            seen.append(next(gen))
        except StopIteration as s:
            model = s.value
            break
    probe_steps = 20  # max(0.25 × 40, 2 × val_every)
    assert {d["total"] for d in seen} == {2 * probe_steps + 2 * 40}  # never grows during the fit
    assert [d["phase_index"] for d in seen] == sorted(d["phase_index"] for d in seen)
    assert {d["n_phases"] for d in seen} == {4}
    assert any(m.startswith("data ready") for m in status) and any("initialising" in m for m in status)
    prov = model.provenance
    assert prov["cancelled"] and prov["steps_planned"] == 120
    assert prov["steps_total_run"] == 2 * probe_steps + 10
    # the interrupted member (10 steps) is not kept when a probe validated better
    best_probe = min(p["val"] for p in prov["probes"])
    assert prov["val_rmse"] <= best_probe + 1e-9
    assert prov["kept"].startswith("best probe") or prov["val_rmse"] < best_probe
