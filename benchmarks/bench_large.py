"""Every interaction at 10⁶ cells: UI stalls in napari (under Xvfb) with a stack of 5 × 200,000 cells.

Synthetic sparse counts (300 genes, smooth spatial patterns, ~4,000 × 3,000 µm sections 20 µm
apart) are written as ``.h5ad`` files to a temporary folder (deleted afterwards), then driven as a
user would, in a napari window with the Sections and View widgets docked, each interaction inside
the stall meter of ``tests/stall.py`` (a 10 ms QTimer on the UI thread: a gap is time the event
loop was blocked; drawing in software OpenGL included):

* ``open`` — File ▸ Open of the files (read in the background), until every section layer is in;
* ``recolour`` — the Sections widget's gene; ``z`` — its z spacing; ``normalize_none`` /
  ``normalize_log1p`` — its normalization, there and back;
* ``baseline.recolour_on_ui`` / ``baseline.normalize_on_ui`` — before: the same recolouring and
  normalization computed on the UI thread (as the widget did), then back to log1p in the worker;
* ``load_model`` — the View widget's *Load model* (a small network saved beforehand), until the
  field plane is drawn;
* ``zoom_in`` / ``pan`` / ``zoom_out`` — camera changes: the field plane re-rendered, the sections'
  level of detail re-picked;
* ``scrub`` — napari's z slider stepped through the sections (150 ms apart);
* ``to_3d`` / ``to_2d`` — the 2D/3D switch.

For each: ``<name>.max_ms`` / ``p99_ms`` / ``median_ms`` / ``over_100ms`` (gaps), ``<name>.s`` (until
done), ``<name>.paint_in_max_ms`` (canvas painting inside the longest gap) and
``<name>.no_paint_max_ms`` (the longest gap less the painting inside it: the bar's "drawing aside"). Also the load average, the peak memory of the process and the level-of-detail cap.
``--quick``: 2 × 50,000 cells, 100 genes. Run: ``python benchmarks/run.py --only large``.
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

    return run_gui_child(__file__, "large", quick, extra_paths=[ROOT / "tests"])


def write_sections(directory: Path, n_sections: int, n_cells: int, n_genes: int, seed: int = 0) -> list:
    """``n_sections`` .h5ad files of sparse Poisson counts (z recorded in ``uns['z_um']``)."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    freq = rng.uniform(1 / 1500, 1 / 250, (n_genes, 2)) * rng.choice([-1, 1], (n_genes, 2))
    phase, amp = rng.uniform(0, 2 * np.pi, n_genes), rng.uniform(0.3, 2.0, n_genes)
    base = rng.uniform(-3.0, 0.0, n_genes)
    var = pd.DataFrame(index=pd.Index([f"G{k:03d}" for k in range(n_genes)], dtype=str))
    paths = []
    for i in range(n_sections):
        z = 20.0 * i
        xy = rng.random((n_cells, 2)) * np.array([4000.0, 3000.0])
        parts = []
        for r in range(0, n_cells, 20_000):
            b = xy[r:r + 20_000]
            rate = np.exp(base + amp * np.cos(2 * np.pi * b @ freq.T + phase + z / 50.0))
            parts.append(sp.csr_matrix(rng.poisson(rate).astype(np.float32)))
        a = ad.AnnData(X=sp.vstack(parts, format="csr"), var=var,
                       obs=pd.DataFrame(index=pd.Index([f"s{i}_{k}" for k in range(n_cells)], dtype=str)))
        a.obsm["spatial"] = xy
        a.uns["z_um"] = z
        paths.append(str(directory / f"section_{i}.h5ad"))
        a.write_h5ad(paths[-1])
    return paths


# --- child ------------------------------------------------------------------------------------
def _app():
    from qtpy.QtWidgets import QApplication

    return QApplication.instance() or QApplication([])


def _wait_ms(ms):
    app, t = _app(), time.perf_counter()
    while (time.perf_counter() - t) * 1e3 < ms:
        app.processEvents()
        time.sleep(0.002)


def _until(done, timeout=900.0):
    t = time.perf_counter()
    while not done() and time.perf_counter() - t < timeout:
        _wait_ms(10)
    if not done():
        raise TimeoutError("interaction did not finish")
    _wait_ms(150)  # the redraw that follows


def _model(genes, lo, hi, width=64, depth=2, rank=16):
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


class PaintTimer:
    """Times drawing: the canvas's OpenGL paints (``paintGL`` of the QOpenGLWidget classes in the
    window: vispy uploads and draws there) and the window's own repaints and composition (its
    UpdateRequest and Paint events: Qt paints the widgets and composes the GL canvas into the
    window, in software under Xvfb), so that a stall can be split into drawing and the rest."""

    def __init__(self):
        from qtpy.QtCore import QEvent
        from qtpy.QtWidgets import QApplication, QOpenGLWidget

        self.spans = []
        tops = QApplication.topLevelWidgets()
        for cls in {type(w) for top in tops for w in top.findChildren(QOpenGLWidget)}:
            cls.paintGL = self._timed(cls.paintGL)
        kinds = (QEvent.Type.UpdateRequest, QEvent.Type.Paint)
        for cls in {type(top) for top in tops if top.isVisible()}:
            cls.event = self._timed(cls.event, lambda e: e.type() in kinds)

    def _timed(self, orig, which=None):
        def timed(widget, *a):
            if which is not None and not which(*a):
                return orig(widget, *a)
            t = time.perf_counter()
            try:
                return orig(widget, *a)
            finally:
                self.spans.append((t, time.perf_counter()))
        return timed

    def within(self, a: float, b: float) -> float:
        """Seconds of drawing inside [a, b] (nested spans counted once)."""
        cut = sorted((max(s, a), min(e, b)) for s, e in self.spans if e > a and s < b)
        total, end = 0.0, a
        for s, e in cut:
            if e > end:
                total += e - max(s, end)
                end = e
        return total


def split_gaps(stamps, painter) -> tuple[float, float]:
    """(longest gap less its drawing, drawing inside the longest gap), in ms."""
    st = np.asarray(stamps)
    if len(st) < 2:
        return 0.0, 0.0
    rest = [(b - a - painter.within(a, b)) * 1e3 for a, b in zip(st[:-1], st[1:])]
    k = int(np.argmax(np.diff(st)))
    return max(rest), painter.within(st[k], st[k + 1]) * 1e3


def child(quick: bool) -> dict:
    import resource
    import tempfile

    import napari
    from stall import StallMeter

    from napari_inrst._qt import opener
    from napari_inrst._qt.sections import SectionsWidget
    from napari_inrst._qt.view import ViewWidget
    from napari_inrst.render import sections as rs
    from napari_inrst.viewer.stack_source import section_layers

    n_sec, n_cells, n_genes = (2, 50_000, 100) if quick else (5, 200_000, 300)
    out = {"sections": n_sec, "cells_per_section": n_cells, "genes": n_genes, "lod_cap": rs.LOD_CAP}
    tmp = Path(tempfile.mkdtemp(prefix="inrst_large_"))
    try:
        t = time.perf_counter()
        paths = write_sections(tmp, n_sec, n_cells, n_genes)
        out["write_s"] = round(time.perf_counter() - t, 1)
        out["mb_on_disk"] = round(sum(Path(p).stat().st_size for p in paths) / 2**20, 1)
        _app()
        viewer = napari.Viewer(show=True)
        viewer.window.resize(1400, 900)
        sections, view = SectionsWidget(viewer), ViewWidget(viewer)
        viewer.window.add_dock_widget(sections, name="Sections", tabify=True)
        viewer.window.add_dock_widget(view, name="View", tabify=True)
        _wait_ms(500)
        painter = PaintTimer()
        idle = lambda: not sections.busy and not view.busy  # noqa: E731
        loads = []

        def measure(name, act, done=idle):
            loads.append(os.getloadavg()[0])
            t = time.perf_counter()
            with StallMeter() as m:
                act()
                _until(done)
            s = m.summary()
            out[f"{name}.no_paint_max_ms"], out[f"{name}.paint_in_max_ms"] = (round(v, 1) for v in split_gaps(m.stamps, painter))
            out.update({f"{name}.max_ms": round(s["max_ms"], 1), f"{name}.p99_ms": round(s["p99_ms"], 1),
                        f"{name}.median_ms": round(s["median_ms"], 1), f"{name}.over_100ms": s["over_100ms"],
                        f"{name}.s": round(time.perf_counter() - t, 2)})
            print(f"{name}: {m.report()}; without painting max {out[f'{name}.no_paint_max_ms']:.0f} ms",
                  file=sys.stderr, flush=True)

        def opened():
            op = opener.opener_of(viewer, create=False)
            return len(section_layers(viewer)) == n_sec and (op is None or not op.busy) and idle()

        measure("open", lambda: viewer.open(paths, plugin="napari-inrst"), opened)
        stack = section_layers(viewer)[0].metadata["inrst_stack"]
        out["points_per_layer"] = int(max(len(lyr.data) for lyr in section_layers(viewer)))
        measure("recolour", lambda: sections.set_gene(stack.genes[7]))
        measure("z", lambda: sections.apply_spacing(25.0))
        measure("normalize_none", lambda: sections.apply_normalize("none"))
        measure("normalize_log1p", lambda: sections.apply_normalize("log1p"))
        # baselines (before): the same changes computed on the UI thread, as the widget did
        from napari_inrst.render.sections import apply_section_update
        from napari_inrst.stack import renormalize
        from napari_inrst.viewer.layers import refresh_section_layers
        from napari_inrst.viewer.sections_state import section_updates_job

        def recolour_sync():
            items = [(lyr, lyr.metadata["inrst_section"], lyr.metadata[rs.LOD_KEY]["idx"]) for lyr in section_layers(viewer)]
            for lyr, gene, _, update, move, _ in section_updates_job(stack, stack.genes[9], "viridis", items):
                apply_section_update(lyr, gene, update, move=move)
        measure("baseline.recolour_on_ui", recolour_sync)
        measure("baseline.normalize_on_ui", lambda: (renormalize(stack, "none"), refresh_section_layers(viewer.layers, stack)))
        measure("normalize_log1p_again", lambda: sections.apply_normalize("log1p"))
        lo, hi = stack.bounds()
        model_path = tmp / "model.safetensors"
        _model(stack.genes, np.asarray(lo, float), np.asarray(hi, float) + [0, 0, 1.0]).save(model_path)
        measure("load_model", lambda: view.load_model(str(model_path)))
        cam = viewer.camera
        c = np.asarray(cam.center, float)
        measure("zoom_in", lambda: setattr(cam, "zoom", cam.zoom * 6))
        measure("pan", lambda: setattr(cam, "center", tuple(c + [0, 150.0, 200.0])))
        measure("zoom_out", lambda: setattr(cam, "zoom", cam.zoom / 6))

        def scrub():
            for z in stack.z:
                viewer.dims.set_point(0, float(z))
                _wait_ms(150)
        measure("scrub", scrub)
        measure("to_3d", lambda: setattr(viewer.dims, "ndisplay", 3))
        measure("to_2d", lambda: setattr(viewer.dims, "ndisplay", 2))
        names = sorted({k.rsplit(".", 1)[0] for k in out if k.endswith(".max_ms")})
        worst = max(names, key=lambda k: out[f"{k}.max_ms"])
        out["worst"] = f"{worst} {out[f'{worst}.max_ms']:.0f} ms"
        out["load"] = f"{min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores"
        out["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
        view.cleanup()
        sections.cleanup()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def table(res: dict) -> str:
    names = [k[:-len(".max_ms")] for k in res if k.endswith(".max_ms")]
    rows = ["| interaction | max gap (ms) | of which painting | longest gap without painting | p99 | median | "
            "gaps > 100 ms | seconds |", "|---|---|---|---|---|---|---|---|"]
    for n in names:
        rows.append(f"| {n} | {res[f'{n}.max_ms']:.0f} | {res[f'{n}.paint_in_max_ms']:.0f} | "
                    f"{res[f'{n}.no_paint_max_ms']:.0f} | {res[f'{n}.p99_ms']:.0f} | {res[f'{n}.median_ms']:.0f} | "
                    f"{res[f'{n}.over_100ms']} | {res[f'{n}.s']:.1f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    if "--child" in sys.argv:
        res = child("--quick" in sys.argv)
        print(json.dumps(res, default=float), flush=True)
        os._exit(0)  # skip Qt/napari teardown (it can crash after the figures are out)
    res = run("--quick" in sys.argv)
    print(json.dumps(res, indent=2))
    print(table(res))
