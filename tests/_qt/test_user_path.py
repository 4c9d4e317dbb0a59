"""The user's path on real data, end to end, in a real napari window (Xvfb): open the breast ST
files → set z and units (Sections) → align (Align widget) → train (Train widget, few steps,
few genes) → the View widget shows the field at once → a screenshot with the gene.

One test on purpose: each step needs the one before, as it does for a user."""

import time

import numpy as np
import pytest

from napari_inrst.field import Fourier
from napari_inrst.viewer.layers import STACK_KEY

pytest.importorskip("torch")

pytestmark = pytest.mark.shared

QUICK = dict(batch_size=512, width=64, depth=2, rank=8, val_every=10, patience=50,
             encoding=Fourier(min_wavelength_xy_um=400.0), rc_pretrain_steps=20, threads=1, checkpoint_every=0, ensemble=2)


def test_open_files_set_z_align_train_view_screenshot(make_napari_viewer, qtbot, breast_dir, tmp_path):
    from PIL import Image

    from napari_inrst._qt.align import AlignWidget
    from napari_inrst._qt.sections import SectionsWidget
    from napari_inrst._qt.train import TrainWidget
    from napari_inrst._qt.view import ViewWidget

    viewer = make_napari_viewer(show=True)
    # File ▸ Open File(s) on the 4 files (napari calls the reader once per file): ONE stack
    files = sorted(str(p) for p in breast_dir.glob("*.h5ad"))
    assert len(files) == 4
    viewer.open(files, plugin="napari-inrst")
    stacks = {id(lyr.metadata[STACK_KEY]) for lyr in viewer.layers}
    assert len(viewer.layers) == 4 and len(stacks) == 1
    assert tuple(viewer.dims.axis_labels) == ("z", "y", "x")
    sections = SectionsWidget(viewer)
    qtbot.addWidget(sections)
    text = sections.summary.toPlainText()
    assert text.startswith("4 sections")
    assert "z assumed: 10 µm apart" in text  # the files record no z: said, not hidden
    assert "unit factor" in text  # ST array indices are not µm: said too

    # z and units as the user knows them (ST: spots 200 µm centre to centre)
    assert sections.apply_unit_factor(200.0) and sections.apply_spacing(100.0)
    qtbot.waitUntil(lambda: not sections.busy, timeout=30_000)  # the layers move in a worker
    stack = sections.stack
    assert list(stack.z) == [0.0, 100.0, 200.0, 300.0] and "z assumed" not in sections.summary.toPlainText()
    zs = sorted(float(lyr.data[0, 0]) for lyr in viewer.layers)
    assert zs == [0.0, 100.0, 200.0, 300.0]  # the layers moved with the stack

    # align in the widget (background worker)
    align = AlignWidget(viewer)
    qtbot.addWidget(align)
    t0 = time.perf_counter()
    align.run()
    qtbot.waitUntil(lambda: align.worker is None, timeout=60_000)
    align_s = time.perf_counter() - t0
    assert align.result is not None, align.status.text()
    assert not all(np.allclose(m, np.eye(3)) for m in stack.transforms())

    # the View widget is open before training: it must get the field the moment training ends
    view = ViewWidget(viewer)
    qtbot.addWidget(view)
    assert view.field is None

    train = TrainWidget(viewer)
    qtbot.addWidget(train)
    train.extra_config = dict(QUICK)
    train.state.nice = 1  # (the child's niceness: 10 starves it on a machine loaded by other work)
    train.genes.setValue(40)
    train.steps.setValue(60)
    train.start()
    qtbot.waitUntil(lambda: not train.running, timeout=90_000)
    field = train.field
    assert field is not None and len(field.genes) == 40  # the Genes control, as `fit --genes 40`
    assert len(stack.genes) > 5000  # the viewer's stack keeps every gene
    # progress adds up: one total from the first report to the last, the same as planned in the
    # end message; each phase (here the selection run, then 2 ensemble members, × 60 steps each)
    # is its own segment of the plot
    prov = field.provenance
    assert {d["total"] for d in train.history} == {prov["steps_planned"]} == {180}
    assert f"of {prov['steps_planned']:,} planned" in train.status.text()
    phases = [p for _, p in train.plot.phases]
    assert len(phases) == train.history[-1]["n_phases"] == 3 and len(set(phases)) == 3
    # the hand-over: View shows the new field at once (no layer was added or removed meanwhile)
    assert view.field is field
    qtbot.waitUntil(lambda: not view.busy and bool(view.plane_layers), timeout=30_000)
    gene = view.genes[0]
    assert gene in field.genes and gene in view.plane_layers
    plane = np.asarray(view.plane_layers[gene].data)
    assert np.isfinite(plane).mean() > 0.1 and np.nanstd(plane) > 0

    # figure: a screenshot of the field with the gene shown
    viewer.dims.ndisplay = 2
    view.set_z(150.0, sync=True)  # between sections 2 and 3
    out = view.screenshot(tmp_path / "figure.png", scale=1.0)
    path = tmp_path / "figure.png"
    assert path.exists() and path.stat().st_size > 1000, out
    img = np.asarray(Image.open(path))[..., :3].astype(float)
    assert img.std() > 5 and (np.abs(img - img[0, 0]).sum(-1) > 30).mean() > 0.02  # not one flat colour
    assert view.plane_layers[gene].visible and gene in view.plane_layers[gene].name
    print(f"\nalign (widget path, breast ST 4 sections): {align_s:.1f} s; "
          f"train: {prov['fit_seconds']:.1f} s, {prov['steps_total_run']} steps")
