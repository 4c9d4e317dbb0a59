"""UI responsiveness of the napari widgets: how long the event loop is blocked (a 10 ms QTimer stall
meter, ``tests/stall.py``) while the user scrubs z and while large sections are shown.

    python benchmarks/run.py --only gui [--quick]

Runs in a child process under Xvfb (``xvfb-run``; software OpenGL, so *drawing* is slower than
on a user's GPU and is part of every gap measured here). Gaps are wall time between timer ticks
(an idle loop reads ~10 ms); ``max_ms`` is the longest stall (drawing included),
``sections_handler_max_ms`` / ``field_handler_max_ms`` the longest time spent in one of the
plugin's UI-thread callbacks (a section layer's update / a field plane or volume update handed
over by a worker; drawing excluded).

Figures:
* ``scrub.band.*`` — the View widget with a default-size field (Fourier, 3×128 trunk, rank 64,
  300 genes) over 6 × 5 mm, z moved 30 times every 150 ms with "Band-limited sampling (fast)"
  on (the default); ``scrub.exact.*`` the same with it off (the baseline the issue compared to).
* ``lod.*`` — ``N`` sections × ``n`` cells (quick: 2 × 50,000; full: 5 × 200,000; 100 genes):
  ``build_layers_s`` (layer data for all sections: colours once, a capped subsample per section),
  ``add_layers_s`` (napari adds them; one UI block), then stall summaries for a gene change in
  View (recolours every section in a worker), zoom in (full resolution in view) and out, z steps
  through the sections, and 3D on/off; ``baseline.*``: one section added and recoloured the old
  way (all cells, colours mapped from a feature column) — ``*_ratio`` = baseline / now.
* ``open.*`` — napari's File ▸ Open of ``N`` large .h5ad sections (quick: 2 × 50,000 cells, full:
  5 × 200,000; counts): ``background`` (now: read in a worker, ``_qt/opener.py``) against
  ``baseline`` (the same files read by the reader on the UI thread): ``call_s`` (how long
  ``viewer.open`` itself blocks), ``all_layers_s`` (until every section layer is in), the stall
  summary over that time, ``handler_max_ms`` (the longest UI-thread callback of the background
  opening: handing the stacks over, adding one layer), ``one_stack`` (all files in one stack).
* ``train.*`` — the Train widget training on the synthetic sample (300 genes; quick: 100 steps,
  full: 400): ``train.child.*`` the fit in a child process at niceness ``train.child_nice`` (the
  widget's way), ``train.thread.*`` the same fit in a worker thread of the viewer (before; the
  interpreter lock is shared with the UI), two runs each in the order thread, child, child, thread
  (max: the longer of the two; p99/median/load/seconds: means; over_100ms: both runs' gaps
  together; ``runs_max_ms`` each run's), ``train.idle.*`` the meter with nothing running (the
  machine's own floor); ``*_handler_max_ms`` the longest of the widget's UI-thread callbacks
  (the 4-per-second UI tick, the end of the fit); ``load`` the 1-minute load average.
  ``NAPARI_INRST_GUI_PARTS=train`` runs only these.
* ``scrub_sections.*`` — z scrubbed as a drag of the View widget's z slider (events every 16 ms,
  0.3 µm apart; quick: 40, full: 80) with the synthetic sample's 8 section layers (3D points) and a
  default-size field (band-limited sampling, the default): ``now`` (napari's z, which re-slices
  every section layer, moved once per 1 µm step with the plane) against ``baseline`` (napari's z
  moved at every slider event, as before); ``dims_moves`` how often napari's z moved,
  ``ui_cpu_frac`` / ``ui_runqueue_wait_frac`` the UI thread's CPU time / time runnable but
  waiting for a core, as fractions of the scrub's wall time.
* ``train_breast.*`` — the Train widget on the shared breast ST sections (4 files, unit factor
  200, 100 µm apart; ``NAPARI_INRST_BREAST`` or ``../shared/data/breast_st``; quick: 60 steps,
  full: 150; 200 genes): ``now`` (the widget's own progress bar, at most two updates a second)
  against ``baseline`` (napari's activity-dock progress bar as before: created at the start,
  updated once a second); the same figures as ``train.*`` plus ``tick_cpu_handler_max_ms`` (the
  longest UI tick in the UI thread's CPU time) and the UI thread's CPU / run-queue fractions.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def run(quick: bool = False) -> dict:
    """Run the measurements in a child process (under xvfb-run when there is no display)."""
    from _child import run_gui_child

    return run_gui_child(__file__, "gui", quick, extra_paths=[ROOT])


# --- child ------------------------------------------------------------------------------------
def _app():
    from qtpy.QtWidgets import QApplication

    return QApplication.instance() or QApplication([])


def _wait_ms(ms):
    app = _app()
    t = time.perf_counter()
    while (time.perf_counter() - t) * 1e3 < ms:
        app.processEvents()
        time.sleep(0.002)


def _idle(w, timeout=600.0):
    t = time.perf_counter()
    while w.busy and time.perf_counter() - t < timeout:
        _wait_ms(10)
    _wait_ms(100)


def _stalls(meter, prefix) -> dict:
    s = meter.summary()
    return {f"{prefix}.median_ms": round(s["median_ms"], 1), f"{prefix}.p99_ms": round(s["p99_ms"], 1),
            f"{prefix}.max_ms": round(s["max_ms"], 1), f"{prefix}.over_100ms": s["over_100ms"]}


def _model(genes, lo, hi, width=128, depth=3, rank=64):
    from napari_inrst.field import FieldConfig
    from napari_inrst.field.model import FieldModel
    from napari_inrst.field.spec import ModelConfig

    n = len(genes)
    arch = {"encoding": "fourier", "center": ((lo + hi) / 2).tolist(), "extent": (hi - lo).tolist(),
            "n_freq": [16, 16, 4], "min_wavelength": [60.0, 60.0, 60.0], "width": width, "depth": depth,
            "rank": rank, "n_genes": n, "seed": 0}
    spec = ModelConfig.from_arch(arch)
    return FieldModel(spec.build(), genes=list(genes), mean=np.ones(n), std=np.ones(n), spec=spec,
                      config=FieldConfig(width=width, depth=depth, rank=rank), normalize="log1p",
                      stack_meta={"z": [float(lo[2]), float(hi[2])]}, bounds=(lo, hi))


def _viewer_and_view():
    import napari

    from napari_inrst._qt.view import ViewWidget

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 900)
    w = ViewWidget(viewer)
    viewer.window.add_dock_widget(w)
    return viewer, w


def bench_scrub(quick: bool) -> dict:
    from stall import StallMeter

    lo, hi = np.array([0.0, 0, 0]), np.array([6000.0, 5000, 270])
    model = _model([f"G{i}" for i in range(300)], lo, hi)
    viewer, w = _viewer_and_view()
    w.set_field(model, genes=["G1"])
    _idle(w)
    out = {"scrub.canvas_px": "x".join(map(str, viewer.canvas.size))}
    steps = 12 if quick else 30
    for mode, band in (("band", True), ("exact", False)):
        w.band_box.setChecked(band)
        _idle(w)
        z = 0.0
        with StallMeter() as m:
            for _ in range(steps):
                z += 7.0
                w.z_slider.setValue(z)
                _wait_ms(150)
            _idle(w)
        out.update(_stalls(m, f"scrub.{mode}"))
    w.cleanup()
    viewer.close()
    return out


def _big_stack(n_sections, n_cells, n_genes, seed=0):
    import anndata as ad
    import pandas as pd

    from napari_inrst.stack import Section, SectionStack

    rng = np.random.default_rng(seed)
    genes = [f"g{k}" for k in range(n_genes)]
    secs = []
    for i in range(n_sections):
        xy = rng.random((n_cells, 2)) * np.array([6000.0, 5000.0])
        base = (np.sin(xy[:, :1] / 400.0 + np.arange(n_genes) / 7.0) + 1).astype(np.float32)
        X = base + rng.random((n_cells, n_genes), dtype=np.float32) * 0.3
        a = ad.AnnData(X=X, var=pd.DataFrame(index=pd.Index(genes)))
        a.obsm["spatial"] = xy
        a.uns["spot_diameter_um"] = 4.7
        secs.append(Section(f"s{i}", a, 20.0 * i))
    return SectionStack(secs, genes)


def bench_lod(quick: bool) -> dict:
    from stall import StallMeter

    from napari_inrst._qt.view.renderer import FieldRenderer
    from napari_inrst._qt.view.sections import SectionsOverlay
    from napari_inrst.viewer.layers import stack_layer_data

    n_sec, n_cells, n_genes = (2, 50_000, 100) if quick else (5, 200_000, 100)
    stack = _big_stack(n_sec, n_cells, n_genes)
    out = {"lod.sections": n_sec, "lod.cells_per_section": n_cells, "lod.genes": n_genes}

    handler = {"sections": [], "field": []}  # ms per UI-thread callback of the plugin

    def timing(cls, name, kind):
        orig = getattr(cls, name)

        def timed(self, *a):
            t = time.perf_counter()
            orig(self, *a)
            handler[kind].append((time.perf_counter() - t) * 1e3)
        setattr(cls, name, timed)

    timing(SectionsOverlay, "_apply", "sections")
    timing(FieldRenderer, "_on_result", "field")
    viewer, w = _viewer_and_view()
    warm = viewer.add_points(np.zeros((3, 3)), units="µm")  # napari's one-time costs (units, text, GL)
    _wait_ms(200)
    viewer.layers.remove(warm)
    t = time.perf_counter()
    layers = stack_layer_data(stack)
    out["lod.build_layers_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    with StallMeter() as m:
        for data, kw, _ in layers:
            viewer.add_points(data, **kw)
        _wait_ms(300)
    out["lod.add_layers_s"] = round(time.perf_counter() - t - 0.3, 3)
    out.update(_stalls(m, "lod.open"))
    lo, hi = stack.bounds()
    model = _model(stack.genes, np.asarray(lo, float), np.asarray(hi, float) + [0, 0, 1.0], width=32, depth=2, rank=8)
    w.set_field(model, genes=["g1"])
    _idle(w)
    cam = viewer.scene.camera

    def step(name, action, settle=True):
        for v in handler.values():
            v.clear()
        with StallMeter() as m:
            action()
            _wait_ms(50)
            if settle:
                _idle(w)
        out.update(_stalls(m, f"lod.{name}"))
        for kind, v in handler.items():
            out[f"lod.{name}.{kind}_handler_max_ms"] = round(max(v), 1) if v else 0.0

    step("gene_change", lambda: w.gene.setCurrentText("g7"))
    center = tuple(cam.center)
    step("zoom_in", lambda: (setattr(cam, "center", (center[0], 2500.0, 3000.0)), setattr(cam, "zoom", 3.0)))
    step("zoom_out", lambda: setattr(cam, "zoom", 0.12))
    zs = [float(s.z) for s in stack]
    step("z_steps", lambda: [(w.set_z(z), _wait_ms(150)) for z in zs])
    step("to_3d", lambda: setattr(viewer.dims, "ndisplay", 3))
    step("to_2d", lambda: setattr(viewer.dims, "ndisplay", 2))
    out["lod.points_drawn_max_per_section"] = int(max(len(lyr.data) for lyr in viewer.layers
                                                      if lyr._type_string == "points"))
    # baseline: one section the old way (every cell; colours mapped from a feature column)
    s = stack[0]
    g = stack.gene_index("g1")
    xyz = np.column_stack([np.full(s.n_obs, s.z), s.xy[:, 1], s.xy[:, 0]])
    t = time.perf_counter()
    old = viewer.add_points(xyz, features={"g1": s.X[:, g]}, face_color="g1", face_colormap="viridis",
                            border_width=0, size=4.7, out_of_slice_display=False, units="µm")
    _wait_ms(0)
    out["baseline.add_one_section_s"] = round(time.perf_counter() - t, 3)
    g2 = stack.gene_index("g7")
    t = time.perf_counter()
    old.features = {"g1": s.X[:, g], "g7": s.X[:, g2]}
    old.face_color = "g7"
    old.features = {"g7": s.X[:, g2]}
    old.refresh_colors(update_color_mapping=False)
    out["baseline.recolour_one_section_ms"] = round((time.perf_counter() - t) * 1e3, 1)
    out["lod.add_one_section_s"] = round(out["lod.add_layers_s"] / n_sec, 3)
    out["lod.add_speedup_ratio"] = round(out["baseline.add_one_section_s"] / max(out["lod.add_one_section_s"], 1e-6), 2)
    out["lod.recolour_block_ratio"] = round(out["baseline.recolour_one_section_ms"]
                                            / max(out["lod.gene_change.sections_handler_max_ms"], 1e-6), 2)
    w.cleanup()
    return out


def bench_train(quick: bool) -> dict:
    """Stalls while the Train widget trains (the synthetic sample, 300 genes): the fit in a child
    process at lower priority (the widget's way) against the same fit in a worker thread of the
    viewer's process (before), in the same run, plus the floor: the same meter with nothing running
    (what the machine's load alone costs the UI thread)."""
    import napari
    from stall import StallMeter
    from train_stalls import measure

    from napari_inrst._qt.train import TrainWidget

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 900)
    viewer.open_sample("napari-inrst", "synthetic_aligned")
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.steps.setValue(100 if quick else 400)
    w.genes.setValue(300)
    _wait_ms(3000)
    with StallMeter() as m:
        _wait_ms(5000)
    out = _stalls(m, "train.idle")
    keys = ("max_ms", "p99_ms", "median_ms", "over_100ms", "tick_handler_max_ms", "done_handler_max_ms", "load",
            "seconds")
    # ABBA order (thread, child, child, thread): the machine's load drifts, each runner sees the same drift
    runs: dict[str, list] = {"thread": [], "child": []}
    for runner in ("thread", "child", "child", "thread"):
        runs[runner].append(measure(viewer, w, runner=runner, settle_ms=3000))
    for runner, rs in runs.items():
        for k in keys:
            vals = [r[k] for r in rs]
            agg = max(vals) if k.endswith("max_ms") else (sum(vals) if k == "over_100ms" else
                                                            round(float(np.mean(vals)), 1))
            out[f"train.{runner}.{k}"] = agg
        out[f"train.{runner}.runs_max_ms"] = [r["max_ms"] for r in rs]
        out[f"train.{runner}.first_record_s"] = [r["first_record_s"] for r in rs]
        out[f"train.{runner}.gaps_over_100ms_at_s"] = [r["gaps_over_100ms_at_s"] for r in rs]
    out["train.steps"] = w.steps.value()
    out["train.child_nice"] = __import__("napari_inrst.field.background", fromlist=["x"]).CHILD_NICE
    out["train.max_ratio"] = round(out["train.thread.max_ms"] / max(out["train.child.max_ms"], 1e-6), 2)
    w.close()
    viewer.close()
    return out


def bench_open(quick: bool) -> dict:
    """File ▸ Open of ``N`` large .h5ad sections (quick: 2 × 50,000 cells; full: 5 × 200,000; 100
    genes, counts): the UI thread's longest stall and the time until every layer is in, read in
    the background (now) against the same files read by the reader on the UI thread (before, the
    baseline; ``opener.ASYNC_BYTES`` raised so that napari-inrst reads at once)."""
    import tempfile

    import napari
    import scipy.sparse as sp
    from stall import StallMeter

    from napari_inrst._qt import opener

    n_sec, n_cells, n_genes = (2, 50_000, 100) if quick else (5, 200_000, 100)
    stack = _big_stack(n_sec, n_cells, n_genes)
    tmp = Path(tempfile.mkdtemp(prefix="inrst_open_"))
    paths = []
    for s in stack:
        a = s.adata.copy()
        a.X = sp.csr_matrix(np.round(np.asarray(a.X) * 3.0).astype(np.float32))  # counts
        a.uns["z_um"] = float(s.z)
        paths.append(str(tmp / f"{s.name}.h5ad"))
        a.write_h5ad(paths[-1])
    handler = []  # ms per UI-thread callback of the background opening (the stacks handed over, a layer added)
    for name in ("_read", "_add_one"):
        orig = getattr(opener.BackgroundOpen, name)

        def timed(self, *a, _orig=orig):
            t = time.perf_counter()
            _orig(self, *a)
            handler.append((time.perf_counter() - t) * 1e3)
        setattr(opener.BackgroundOpen, name, timed)
    out = {"open.sections": n_sec, "open.cells_per_section": n_cells,
           "open.mb_on_disk": round(sum(Path(p).stat().st_size for p in paths) / 2**20, 1)}
    for mode in ("background", "baseline"):
        viewer = napari.Viewer(show=True)
        viewer.window.resize(1400, 900)
        _wait_ms(500)
        keep = opener.ASYNC_BYTES
        opener.ASYNC_BYTES = keep if mode == "background" else 2**62
        t0 = time.perf_counter()
        with StallMeter() as m:
            _app().processEvents()
            t = time.perf_counter()
            viewer.open(paths, plugin="napari-inrst")
            call = time.perf_counter() - t
            while len(viewer.layers) < n_sec and time.perf_counter() - t0 < 1800:
                _wait_ms(20)
            total = time.perf_counter() - t0
            _wait_ms(300)
        opener.ASYNC_BYTES = keep
        out[f"open.{mode}.call_s"] = round(call, 3)
        out[f"open.{mode}.all_layers_s"] = round(total, 2)
        out.update(_stalls(m, f"open.{mode}"))
        if mode == "background":
            out["open.background.handler_max_ms"] = round(max(handler), 1) if handler else 0.0
        out[f"open.{mode}.one_stack"] = len({id(lyr.metadata.get("inrst_stack")) for lyr in viewer.layers}) == 1
        viewer.close()
    out["open.load"] = round(os.getloadavg()[0], 1)
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def bench_scrub_sections(quick: bool) -> dict:
    """z scrubbed with the measured sections in the viewer: napari's z moved with the plane, once
    per 1 µm step (now), against at every event (the baseline, emulated in the same run)."""
    from stall import StallMeter
    from train_stalls import ui_thread_clock

    from napari_inrst.synthetic.sample import sample_stack
    from napari_inrst.viewer.layers import stack_layer_data

    stack = sample_stack()[0]
    viewer, w = _viewer_and_view()
    for data, kw, _ in stack_layer_data(stack):
        viewer.add_points(data, **kw)
    lo, hi = (np.asarray(b, dtype=float) for b in stack.bounds())
    w.set_field(_model(stack.genes, lo, hi + [0, 0, 1.0]), genes=[stack.genes[1]])
    _idle(w)
    zc = w.zctl
    moves = []
    viewer.dims.events.point.connect(lambda e: moves.append(1))

    def every_event(z):  # before: napari's z followed each event of the View's z slider
        lo_, hi_ = viewer.dims.range[0][:2]
        if lo_ <= z <= hi_:
            zc._setting_dims = True
            viewer.dims.set_point(0, z)
            zc._setting_dims = False
            zc._last_dims = zc._dims_now()

    n = 40 if quick else 80
    out = {"scrub_sections.events": n, "scrub_sections.sections": len(stack)}
    z0 = 60.0
    for mode in ("baseline", "now", "now", "baseline"):
        if mode == "baseline":
            w.state.z_changed.connect(every_event)
        w.set_z(z0)
        _idle(w)
        moves.clear()
        cpu0, wait0 = ui_thread_clock()
        t = time.perf_counter()
        with StallMeter() as m:
            for k in range(n):
                w.z_slider.setValue(z0 + 0.3 * (k + 1))
                _wait_ms(16)
            _idle(w)
        wall = time.perf_counter() - t
        cpu1, wait1 = ui_thread_clock()
        if mode == "baseline":
            w.state.z_changed.disconnect(every_event)
        s = {**_stalls(m, "x"), "dims_moves": len(moves), "ui_cpu_frac": (cpu1 - cpu0) / wall,
             "ui_runqueue_wait_frac": (wait1 - wait0) / wall, "load": os.getloadavg()[0]}
        for k, v in s.items():  # two runs per mode (ABBA): max of maxima, sums of counts, means of the rest
            key = f"scrub_sections.{mode}.{k.removeprefix('x.')}"
            if key not in out:
                out[key] = v
            elif k.endswith("max_ms"):
                out[key] = max(out[key], v)
            elif k in ("x.over_100ms", "dims_moves"):
                out[key] += v
            else:
                out[key] = round((out[key] + v) / 2, 3)
        z0 += 30.0
    w.cleanup()
    viewer.close()
    return out


def bench_train_breast(quick: bool) -> dict:
    """Stalls while the Train widget trains on the shared breast ST sections: the widget's own
    progress bar (now) against napari's activity-dock progress bar (the baseline, as before)."""
    import napari
    from napari.utils import progress
    from train_stalls import measure

    from napari_inrst._qt.sections import SectionsWidget
    from napari_inrst._qt.train import TrainWidget

    folder = Path(os.environ.get("NAPARI_INRST_BREAST", ROOT.parent / "shared" / "data" / "breast_st"))
    files = sorted(str(p) for p in folder.glob("*.h5ad"))
    if not files:
        return {"train_breast.skipped": f"no .h5ad in {folder}"}
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 900)
    viewer.open(files, plugin="napari-inrst")
    sections = SectionsWidget(viewer)
    viewer.window.add_dock_widget(sections)
    sections.apply_unit_factor(200.0)
    sections.apply_spacing(100.0)
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.steps.setValue(60 if quick else 150)
    w.genes.setValue(200)
    own_update = TrainWidget._update_ui
    napari_bar = {}

    def with_napari_bar(self):  # before: napari's progress bar, updated once a second
        own_update(self)
        now = time.monotonic()
        bar = napari_bar.get("bar")
        if bar is None and self.running:
            bar = napari_bar["bar"] = progress(total=0, desc="Training field: preparing")
            napari_bar["t"] = 0.0
        d = self.state.history[-1] if self.state.history else None
        if bar is not None and d is not None and now - napari_bar["t"] >= 1.0:
            napari_bar["t"] = now
            if bar.total != d["total"]:
                bar.total = d["total"]
            if d["step"] > bar.n:
                bar.update(d["step"] - bar.n)

    def close_bar():
        bar = napari_bar.pop("bar", None)
        if bar is not None:
            bar.close()

    keys = ("max_ms", "p99_ms", "median_ms", "over_100ms", "tick_handler_max_ms", "tick_cpu_handler_max_ms",
            "take_cpu_handler_max_ms", "ui_cpu_frac", "ui_runqueue_wait_frac", "load", "seconds")
    out = {"train_breast.steps": w.steps.value(), "train_breast.genes": w.genes.value()}
    runs: dict[str, list] = {"baseline": [], "now": []}
    for mode in ("baseline", "now", "now", "baseline")[: 2 if quick else 4]:
        w._update_ui = (lambda: with_napari_bar(w)) if mode == "baseline" else (lambda: own_update(w))
        r = measure(viewer, w, runner="child", settle_ms=3000)
        close_bar()
        runs[mode].append(r)
    for mode, rs in runs.items():
        for k in keys:
            vals = [r[k] for r in rs]
            out[f"train_breast.{mode}.{k}"] = (max(vals) if k.endswith("max_ms") else sum(vals) if k == "over_100ms"
                                               else round(float(np.mean(vals)), 3))
        out[f"train_breast.{mode}.runs_max_ms"] = [r["max_ms"] for r in rs]
    w.close()
    viewer.close()
    return out


#: which parts run (NAPARI_INRST_GUI_PARTS=train,scrub,lod,open,scrub_sections,train_breast; default all)
PARTS = {"scrub": bench_scrub, "lod": bench_lod, "open": bench_open, "train": bench_train,
         "scrub_sections": bench_scrub_sections, "train_breast": bench_train_breast}


def child(quick: bool) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT / "scripts"))
    _app()
    out = {}
    wanted = [p for p in os.environ.get("NAPARI_INRST_GUI_PARTS", ",".join(PARTS)).split(",") if p]
    for part in wanted:
        out.update(PARTS[part](quick))
    return out


if __name__ == "__main__":
    if "--child" in sys.argv:
        res = child("--quick" in sys.argv)
        print(json.dumps(res, default=float), flush=True)
        os._exit(0)  # skip Qt/napari teardown (it can crash after the figures are out)
    print(json.dumps(run("--quick" in sys.argv), indent=2))
