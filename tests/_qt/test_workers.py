"""The widgets' worker helpers: latest request wins, cancellable jobs, update-or-add an image layer."""

import threading

import numpy as np


def test_latest_request_drops_superseded_results(qtbot):
    from napari_inrst._qt.workers import LatestRequest

    gate = threading.Event()
    shown, returned = [], []

    def work(name, block):
        if block:
            gate.wait(5)
        yield name
        return name.upper()

    req = LatestRequest(work, on_yield=shown.append, on_return=returned.append)
    req.submit("first", True)  # runs (blocked) while the next two come in
    req.submit("second", False)  # superseded by "third" before it ever starts
    req.submit("third", False)
    assert req.busy and req.rid == 3
    gate.set()
    qtbot.waitUntil(lambda: not req.busy, timeout=5000)
    assert shown == ["third"] and returned == ["THIRD"]

    req.submit("late", True)
    gate.clear()
    req.cancel()  # nothing of a cancelled request is delivered
    gate.set()
    qtbot.waitUntil(lambda: not req.busy, timeout=5000)
    assert shown == ["third"] and returned == ["THIRD"]


def test_job_progress_result_error_and_cancel(qtbot, monkeypatch):
    import napari_inrst._qt.workers as W

    errors = []
    monkeypatch.setattr(W, "show_error", errors.append)
    log = []
    job = W.Job("counting", on_progress=lambda f: log.append(("p", f)), on_done=lambda r: log.append(("done", r)),
                on_error=lambda e: log.append(("error", type(e).__name__)), on_finish=lambda: log.append("end"))

    def count(n):
        for i in range(n):
            yield i / n
        return n

    job.start(count, 2)
    assert job.start(count, 2) is None  # one run at a time
    qtbot.waitUntil(lambda: not job.running, timeout=5000)
    assert log == [("p", 0.0), ("p", 0.5), ("done", 2), "end"] and errors == []

    def broken():
        yield 0.0
        raise ValueError("bad input")

    log.clear()
    job.start(broken)
    qtbot.waitUntil(lambda: not job.running, timeout=5000)
    assert log[-2:] == [("error", "ValueError"), "end"] and errors == ["napari-inrst: counting failed: bad input"]

    # soft cancel: the job sees should_stop() and its partial result still arrives
    gate = threading.Event()
    soft = W.Job("fit", on_done=lambda r: log.append(("done", r)), quit_on_cancel=False)

    def fit():
        steps = 0
        while not soft.should_stop() and steps < 10_000:
            steps += 1
            gate.wait(0.001)
        return steps

    log.clear()
    soft.start(fit)
    soft.cancel()
    qtbot.waitUntil(lambda: not soft.running, timeout=5000)
    assert log and log[0][0] == "done" and log[0][1] < 10_000

    # hard cancel (default): the worker stops at its next yield, no result
    log.clear()
    hard = W.Job("loop", on_done=lambda r: log.append(("done", r)), on_finish=lambda: log.append("end"))

    def forever():
        while True:
            gate.wait(0.001)
            yield None

    hard.start(forever)
    hard.cancel()
    qtbot.waitUntil(lambda: not hard.running, timeout=5000)
    assert log == ["end"] and hard.should_stop()


def test_update_or_add_image(make_napari_viewer):
    from napari_inrst._qt.layers import update_or_add_image

    viewer = make_napari_viewer()
    a, added = update_or_add_image(viewer, np.zeros((4, 5)), name="img", scale=(2.0, 2.0), translate=(1.0, 1.0),
                                   contrast_limits=(0.0, 1.0), colormap="inferno", metadata={"k": 1})
    assert added and a.name == "img" and a.colormap.name == "inferno" and a.metadata == {"k": 1}
    b, added = update_or_add_image(viewer, np.ones((8, 10)), name="img", scale=(1.0, 1.0), translate=(0.0, 0.0),
                                   contrast_limits=(0.0, 2.0), colormap="gray")
    assert b is a and not added and len(viewer.layers) == 1
    assert b.data.shape == (8, 10) and tuple(b.scale) == (1.0, 1.0) and tuple(b.contrast_limits) == (0.0, 2.0)
    assert b.colormap.name == "inferno"  # add-only options leave an existing layer alone
    c, added = update_or_add_image(viewer, np.ones((3, 3)), layer=b, name="other")  # the layer wins over the name
    assert c is a and not added
    viewer.layers.remove(a)
    d, added = update_or_add_image(viewer, np.ones((3, 3)), layer=a, name="img")  # gone: added again
    assert added and d is not a and d in viewer.layers
