"""Widget "Train" in a real napari viewer: background training, live plot and preview, the
UI never stalls, Cancel keeps a usable field, Resume continues, other widgets find the field."""

import os
import time

import numpy as np
import pytest

from napari_inrst.field import Fourier

pytest.importorskip("torch")

QUICK = dict(batch_size=1024, width=64, depth=2, rank=16, val_every=10, patience=50,
             encoding=Fourier(min_wavelength_xy_um=100.0), rc_pretrain_steps=20, threads=1, checkpoint_every=20)


@pytest.fixture()
def viewer_widget(make_napari_viewer, qtbot):
    from napari_inrst._qt.train import TrainWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-inrst", "synthetic_aligned")
    w = TrainWidget(viewer)
    qtbot.addWidget(w)
    w.extra_config = dict(QUICK)
    # the fit runs in a child process; niceness 1, not the widget's 10: on a machine loaded by other
    # work a child at niceness 10 is starved and these tests would take minutes (same mechanism)
    w.state.nice = 1
    return viewer, w


def test_training_runs_in_background_with_live_plot_preview_and_no_stall(viewer_widget, qtbot):
    from qtpy.QtCore import QTimer

    from napari_inrst._qt.train import FIELD_KEY, find_field
    from napari_inrst.field.model import FieldModel

    viewer, w = viewer_widget
    assert w.train_btn.isEnabled() and not w.cancel_btn.isEnabled()
    w.steps.setValue(120)
    w.gene.setCurrentText("LayerB")
    viewer.dims.set_point(0, 90.0)  # a z between measured sections
    from napari.utils import progress

    gaps, last = [], [time.perf_counter()]
    bar_seen, napari_bars = [], []

    def tick():
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now
        bar_seen.append((w.progress.value(), w.progress.maximum()))
        napari_bars.append(len(progress._all_instances))

    w.start()  # (creates the preview layer, empty, then returns: training runs in the background)
    layer = next(lyr for lyr in viewer.layers if lyr.metadata.get("inrst_preview"))
    updates = []
    layer.events.data.connect(lambda e: updates.append(len(w.history)))
    assert w.running and w.cancel_btn.isEnabled() and not w.train_btn.isEnabled()
    timer = QTimer()
    timer.timeout.connect(tick)
    last[0] = time.perf_counter()
    timer.start(10)
    qtbot.waitUntil(lambda: not w.running, timeout=120_000)
    timer.stop()
    assert len(gaps) > 20
    # < 100 ms. On a machine oversubscribed by other processes (load above its core count) the
    # OS alone starves the UI thread now and then; there only a 500 ms bound is meaningful.
    limit = 0.1 if os.getloadavg()[0] <= (os.cpu_count() or 1) else 0.5
    assert max(gaps) < limit, f"event loop stalled {max(gaps) * 1000:.0f} ms (load {os.getloadavg()[0]:.1f})"

    assert isinstance(w.field, FieldModel) and not w.field.provenance["cancelled"]
    # the widget's own progress bar advanced while training and reached the end of the plan;
    # napari's activity-dock progress (a repaint of the whole window many times a second) is not used
    planned = w.field.provenance["steps_planned"]
    middle = {v for v, m in bar_seen if m == planned and 0 < v < planned}
    assert len(middle) >= 2, bar_seen[-5:]
    assert (w.progress.value(), w.progress.maximum()) == (planned, planned) and "done" in w.progress.format()
    assert max(napari_bars) == 0
    # the live preview is in the widget (a layer update redraws the whole canvas); the canvas gets
    # the preview layer once, when the fit ends
    assert w.thumb.shown >= 2 and w.thumb.pixmap() is not None and not w.thumb.pixmap().isNull()
    assert len(updates) == 1  # filled once, when the fit ended
    assert find_field(viewer) is w.field
    from napari_inrst.viewer.session import current_field

    assert current_field(viewer) is w.field  # handed over explicitly (the View widget listens)
    preview = next(lyr for lyr in viewer.layers if lyr.metadata.get(FIELD_KEY) is not None)
    assert preview.metadata[FIELD_KEY] is w.field and "LayerB" in preview.name
    assert preview.metadata["z_um"] == pytest.approx(90.0)
    # the preview is the field's LayerB at z = 90 µm (NaN outside tissue), with the field's geometry
    img = np.asarray(preview.data)
    ok = np.isfinite(img)
    assert ok.mean() > 0.3 and img[ok].std() > 0.05
    ys, xs = np.nonzero(ok)
    k = len(ys) // 2
    y = preview.translate[0] + preview.scale[0] * ys[k]
    x = preview.translate[1] + preview.scale[1] * xs[k]
    assert img[ys[k], xs[k]] == pytest.approx(float(w.field.predict([[x, y, 90.0]], ["LayerB"])[0, 0]), abs=1e-4)
    assert len(w.plot.loss) >= 5 and len(w.plot.val) >= 3
    # 120 steps of selection (validated on held-out sections), then the final fit to the selected
    # step: the plan (120 + 120) is fixed from the first report, the final run stops early
    assert {d["total"] for d in w.history} == {w.field.provenance["steps_planned"]} == {240}
    assert w.history[-1]["step"] == 120 + w.field.provenance["best_step"]
    assert [d["kind"] for d in w.history][-1] == "final" and w.history[0]["kind"] == "selection"
    v = w.field.validation  # the self-report against interpolation, shown after training
    assert f"field {v['field']:.2f}, interpolation {v['interpolation']:.2f}" in w.status.text()
    assert w.save_btn.isEnabled()


def test_cancel_keeps_a_field_and_resume_continues(viewer_widget, qtbot):
    viewer, w = viewer_widget
    w.steps.setValue(100000)
    w.start()
    qtbot.waitUntil(lambda: len(w.history) >= 3, timeout=60_000)
    w.cancel()
    qtbot.waitUntil(lambda: not w.running, timeout=60_000)
    first = w.field
    assert first is not None and first.provenance["cancelled"]
    stopped_at = first.provenance["steps_run"]
    assert 0 < stopped_at < 100000
    assert w.resume_btn.isEnabled()
    n_hist = len(w.history)
    w.start(resume=True)
    qtbot.waitUntil(lambda: len(w.history) >= n_hist + 3, timeout=60_000)
    w.cancel()
    qtbot.waitUntil(lambda: not w.running, timeout=60_000)
    resumed = w.history[n_hist:]
    assert resumed[0]["step"] > stopped_at - 10  # continued from the checkpoint, not from step 0
    assert w.field is not first and w.field.provenance["steps_run"] > stopped_at
