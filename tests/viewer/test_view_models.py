"""The widgets' view models without Qt (no QApplication): a napari ViewerModel, the synthetic
sample (known truth) and quick stand-in fits; the widgets' GUI tests run the same paths in Qt."""

import subprocess
import sys

import numpy as np
import pytest

from napari_inrst.viewer.layers import stack_layer_data
from napari_inrst.synthetic.sample import rigid_matrix, sample_stack


def run_to_end(job):
    """Run a widget job (a generator function) as its worker would: (return value, yielded items)."""
    gen, seen = job(), []
    try:
        while True:
            seen.append(next(gen))
    except StopIteration as stop:
        return stop.value, seen


@pytest.fixture(scope="module")
def small():
    return sample_stack(misplace=False, n_genes=12, spot_spacing=120.0)


def test_view_models_import_without_qt():
    code = ("import sys; import napari_inrst.viewer.qc_state, napari_inrst.viewer.align_state, "
            "napari_inrst.viewer.sections_state, napari_inrst.viewer.stack_source; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_stack_source_follows_the_viewers_layers(small):
    from napari.components import ViewerModel

    from napari_inrst.viewer.stack_source import StackSource

    stack, _ = small
    viewer = ViewerModel()
    seen = []
    src = StackSource(viewer, track_layers=True)
    src.changed.connect(seen.append)
    assert src.update() and seen == [None]
    assert not src.update()  # nothing changed: no event
    layers = [viewer.add_points(data, **kw) for data, kw, _ in stack_layer_data(stack)]
    assert src.stack is stack and seen[-1] is stack
    n = len(seen)
    assert n == 1 + len(layers)  # track_layers: each section joining the stack is news
    viewer.add_image(np.zeros((4, 4)))  # not a section: no event
    assert len(seen) == n
    plain = StackSource(viewer)
    plain.update()
    viewer.layers.remove(layers[0])
    assert src.stack is stack and len(seen) == n + 1 and plain.stack is stack
    viewer.layers.clear()
    assert src.stack is None and seen[-1] is None and plain.stack is None
    src.disconnect()
    data, kw, _ = stack_layer_data(stack)[0]
    viewer.add_points(data, **kw)
    assert src.stack is None and plain.stack is stack


def test_qc_state_holdout_panels_overview_and_domains(small):
    from napari_inrst.measure.baselines import KNN3D
    from napari_inrst.evaluate.fitting import FieldPredictor
    from napari_inrst.field.api import TruthField
    from napari_inrst.viewer.qc_state import QCState

    stack0, tissue = small
    stack = stack0.select(range(len(stack0)))
    for s in stack:
        s.adata = s.adata.copy()
        s.adata.obs["layer"] = tissue.programs(s.xyz)[:, :5].argmax(1).astype(str)
    st = QCState()
    events = {k: [] for k in ("stack", "excluded", "holdout", "consistency", "domains")}
    st.stack_changed.connect(events["stack"].append)
    st.excluded_changed.connect(lambda i, on: events["excluded"].append((i, on)))
    st.holdout_changed.connect(events["holdout"].append)
    st.consistency_changed.connect(events["consistency"].append)
    st.domains_changed.connect(events["domains"].append)
    st.set_stack(stack)
    assert events["stack"] == [stack] and st.default_holdout() == len(stack) // 2
    assert "layer" in st.annotation_columns() and len(st.section_labels()) == len(stack)
    fits = []
    st.fit_fn = lambda s_, secs: fits.append(list(secs)) or KNN3D(s_, secs)
    st.set_excluded(1)
    assert events["excluded"] == [(1, True)] and stack[1].excluded
    ov, text, flagged = st.overview()
    assert "excluded" in text and flagged == [] and ov["sections"][1]["excluded"]
    # hold-out: trained without it and without the excluded one, scored per gene
    res, msgs = run_to_end(st.holdout_job(3))
    assert fits == [[0, 2, 4, 5, 6, 7]] and msgs[0].startswith("training without")
    st.set_holdout(res)
    assert events["holdout"] == [res] and st.holdout == 3 and len(st.rows) == stack.n_genes
    p = st.panels("LayerB")
    g = stack.gene_index("LayerB")
    np.testing.assert_allclose(p["residual"], st.pred[:, g] - stack[3].X[:, g])
    assert p["shift"] > np.ptp(stack[3].xy[:, 0]) and np.allclose(p["data"][:, 0], stack[3].z)
    assert p["residual_max"] > 0 and p["titles"][0] == "measured LayerB" and st.panels("nope") is None
    assert "LayerB" in p["status"] and "Pearson" in st.holdout_title()
    with pytest.raises(ValueError, match="nothing left"):
        one = QCState()
        one.set_stack(stack.select([0]))
        one.holdout_job(0)
    # consistency: one fit per section, progress per section, flagged rows reach the overview
    stack[1].excluded = False
    stack[4].transform = rigid_matrix(25, center=tissue.center)
    seen = []
    rows, _ = run_to_end(st.consistency_job(progress=seen.append))
    assert "outlier sections: " + stack[4].name == st.set_consistency(rows)
    assert len(seen) == len(stack) and st.progress_text(seen[-1]).startswith(f"checked {len(stack)}/{len(stack)}")
    assert st.overview()[2] == [4] and events["consistency"] == [rows]
    # domains need a field with latent features: on the core's default grid, ARI on the hold-out
    assert not st.can_cluster()
    st.model = FieldPredictor(TruthField(tissue, stack.genes), stack.genes)
    st.n_domains, st.labels_key = 5, "layer"
    dom, _ = run_to_end(st.domains_job())
    st.set_domains(dom)
    assert dom.ari > 0.25 and events["domains"] == [dom] and "ARI vs 'layer'" in st.domains_ari_text()
    assert dom.labels.shape == dom.grid.shape and max(dom.grid.shape[1:]) == 48
    # a new stack drops every result
    st.set_stack(None)
    assert st.pred is None and st.model is None and st.consistency is None and st.rows == []


def test_align_state_manual_corrections_move_about_the_centroid_and_undo(small):
    from types import SimpleNamespace

    from napari_inrst.viewer.align_state import AlignState

    stack0, _ = small
    stack = stack0.select(range(len(stack0)))
    st = AlignState(undo_merge_s=0.0)
    moved = []
    st.moved.connect(moved.append)
    st.set_stack(stack)
    xy0 = stack[0].xy.copy()
    c = xy0.mean(axis=0)
    st.set_manual(0, (90.0, 0.0, 0.0, False))
    np.testing.assert_allclose(stack[0].xy, (xy0 - c) @ np.array([[0, -1], [1, 0]]).T + c, atol=1e-6)
    st.set_manual(0, (0.0, 10.0, 0.0, True))
    np.testing.assert_allclose(stack[0].xy[:, 0], 2 * c[0] - xy0[:, 0] + 10.0, atol=1e-6)
    assert st.table()[0][2] == "yes" and moved == [0, 0]
    st.reset(0)
    np.testing.assert_allclose(stack[0].xy, xy0, atol=1e-6)
    assert st.undo() == 0 and st.edit(0) == (0.0, 10.0, 0.0, True)
    assert st.undo() == 0 and st.undo() == 0 and st.undo() is None and not st.can_undo
    np.testing.assert_allclose(stack[0].xy, xy0, atol=1e-6)
    # a result is written into the stack and becomes the base of later corrections
    shift = rigid_matrix(0.0, (5.0, 0.0))
    result = SimpleNamespace(reference=2, method="rigid", residual_um=[1.0, 3.0], mirrored=[False] * len(stack),
                             apply=lambda s_: [setattr(sec, "transform", shift) for sec in s_.sections])
    st.apply_result(result)
    assert moved[-1] == -1 and np.allclose(st.base[0], shift) and st.table()[0][3] == "1.0"
    assert st.result_message().startswith(f"aligned onto {stack.names[2]} (rigid); median residual 2.0 µm")


def test_sections_state_applies_or_reports_and_changes_nothing(small):
    from napari_inrst.viewer.sections_state import SectionsState, parse_z

    stack0, _ = small
    stack = stack0.select(range(3))
    assert parse_z("0, 12.5; 40 55") == [0.0, 12.5, 40.0, 55.0]
    st = SectionsState()
    changed, failed = [], []
    st.changed.connect(changed.append)
    st.failed.connect(failed.append)
    assert not st.apply_spacing(5.0)  # no stack: nothing to do
    st.set_stack(stack)
    assert st.apply_spacing(20.0) and list(stack.z) == [0.0, 20.0, 40.0] and changed == ["z set: 0, 20, 40 µm"]
    assert not st.apply_z_text("0, 5, 5") and "share a z" in str(failed[-1]) and list(stack.z) == [0.0, 20.0, 40.0]
    assert not st.apply_z_text("0, a") and "not a list of numbers" in str(failed[-1])
    assert not st.apply_normalize(stack.normalize) and len(changed) == 1  # unchanged: no event
