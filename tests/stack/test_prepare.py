"""Preparing a stack for a field (one rule for the CLI and the widgets) and how a fit reports its
phases: the plan (selection run + final run) is fixed up front, Cancel keeps the best validated
network."""

import numpy as np
import pytest

from napari_inrst.stack.prepare import DEFAULT_GENE_CAP, model_genes, prepare_for_field


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


def _states_equal(a, b) -> bool:
    sa, sb = a.net.state_dict(), b.net.state_dict()
    return sa.keys() == sb.keys() and all(np.allclose(sa[k].numpy(), sb[k].numpy(), atol=1e-6) for k in sa)


def test_plan_is_fixed_up_front_and_cancel_keeps_the_best_phase(aligned):
    pytest.importorskip("torch")
    from napari_inrst.field import FieldConfig, Fourier
    from napari_inrst.field.fit import iter_fit

    stack, _ = aligned
    cfg = FieldConfig(steps=60, batch_size=512, width=32, depth=2, rank=8, val_every=10, log_every=5,
                      patience=50, rc_pretrain_steps=10, threads=1,
                      encoding=Fourier(min_wavelength_xy_um=100.0))

    def run(stop_when):
        """Fit with Cancel at the first record for which ``stop_when(records)`` holds; the best
        selection network so far is captured at each record that improves the validation."""
        seen, status, best = [], [], [None]
        gen = iter_fit(stack, cfg, sections=[0, 2, 4], should_stop=lambda: stop_when(seen),
                       on_status=status.append)
        while True:
            try:
                d = next(gen)
            except StopIteration as s:
                return s.value, seen, status, best[0]
            if d["kind"] == "selection" and d["val"] is not None and d["val"] == d["best_val"]:
                best[0] = d["snapshot"]()  # the weights validated best so far (EMA, at that step)
            seen.append(d)

    # Cancel during the final run: the plan was selection 60 + final 60 from the first record;
    # the validated selection network is kept, not the half-trained final one
    model, seen, status, best = run(lambda r: any(d["kind"] == "final" for d in r))
    assert {d["total"] for d in seen} == {120}  # never changes during the fit
    assert [d["phase_index"] for d in seen] == sorted(d["phase_index"] for d in seen)
    assert {d["n_phases"] for d in seen} == {2} and {d["kind"] for d in seen} == {"selection", "final"}
    fin = [d for d in seen if d["kind"] == "final"]
    assert len(fin) == 1 and fin[0]["phase_start"] == 60 and fin[0]["step"] == 65  # stopped at its first report
    assert any(m.startswith("data ready") for m in status) and any("initialising" in m for m in status)
    prov = model.provenance
    assert prov["cancelled"] and prov["steps_planned"] == 120
    assert prov["steps_total_run"] == 60 + 5
    assert prov["kept"].startswith("selection network")
    assert prov["val_rmse"] == pytest.approx(min(d["best_val"] for d in seen if d["best_val"] is not None))
    assert _states_equal(model, best)  # exactly the best validated selection weights
    assert model.validation["best_step"] == prov["best_step"] and model.validation["field"] is not None

    # Cancel during the selection: its best weights so far are kept
    model, seen, _, best = run(lambda r: bool(r) and r[-1]["step"] >= 35)
    prov = model.provenance
    assert {d["kind"] for d in seen} == {"selection"} and {d["total"] for d in seen} == {120}
    assert prov["cancelled"] and prov["steps_total_run"] == 35 and prov["kept"].startswith("selection network")
    assert prov["best_step"] <= 30 and _states_equal(model, best)

    # not cancelled: the final fit runs to the selected step and is kept; the bar's plan is unchanged
    model, seen, _, _ = run(lambda r: False)
    prov = model.provenance
    assert not prov["cancelled"] and prov["kept"] == "final fit" and {d["total"] for d in seen} == {120}
    assert seen[-1]["step"] == 60 + prov["best_step"] and prov["steps_total_run"] == 60 + prov["best_step"]
