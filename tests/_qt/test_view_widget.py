"""The View field widget in real napari under Xvfb, against the synthetic sample's analytic truth."""

import numpy as np
import pytest

from napari_inrst.field import TruthField
from napari_inrst.synthetic.sample import SyntheticTissue

from ..conftest import counting_field

GENES = ["LayerA", "LayerB", "LayerC", "BlobA", "Boundary", "G010", "G011", "G012"]


@pytest.fixture(scope="module")
def tissue():
    # the sample's geometry (same seed and size) with fewer genes, so the truth is fast
    return SyntheticTissue(n_genes=40, depth=270.0, seed=0)


@pytest.fixture(scope="module")
def section_layer_data():
    """The plugin's section Points layers of the synthetic sample (built once per module)."""
    from napari_inrst.viewer.layers import stack_layer_data
    from napari_inrst.synthetic.sample import sample_stack

    return stack_layer_data(sample_stack()[0])


def _make_view(make_napari_viewer, qtbot, tissue, sections=None):
    from napari_inrst._qt.view import ViewWidget

    viewer = make_napari_viewer(show=True)
    viewer.window.resize(760, 480)  # a small canvas keeps the analytic truth quick
    for data, kwargs, _ in sections or []:
        viewer.add_points(data, **kwargs)
    qtbot.wait(200)
    w = ViewWidget(viewer)
    qtbot.addWidget(w)
    field = counting_field(tissue, GENES)
    w.set_field(field, genes=["LayerB"])
    _wait(qtbot, w)
    return viewer, w, field


@pytest.fixture()
def view(make_napari_viewer, qtbot, tissue):
    v = _make_view(make_napari_viewer, qtbot, tissue)
    yield v
    v[1].cleanup()


@pytest.fixture()
def view_sections(make_napari_viewer, qtbot, tissue, section_layer_data):
    v = _make_view(make_napari_viewer, qtbot, tissue, section_layer_data)
    yield v
    v[1].cleanup()


def _wait(qtbot, w, timeout=30000):
    qtbot.waitUntil(lambda: not w.busy, timeout=timeout)


def _layer_xyz(layer):
    """Field points (x, y, z) of every pixel of a plane layer, from its scale/translate."""
    ny, nx = layer.data.shape
    (sy, sx), (ty, tx) = layer.scale, layer.translate
    yy, xx = np.meshgrid(ty + np.arange(ny) * sy, tx + np.arange(nx) * sx, indexing="ij")
    return np.column_stack([xx.ravel(), yy.ravel(), np.full(xx.size, layer.metadata["z_um"])])


def test_plane_matches_field_masks_outside_and_gets_finer_when_zooming(view, qtbot, tissue):
    viewer, w, _ = view
    layer = w.plane_layers["LayerB"]
    assert layer in viewer.layers and layer.metadata["fine"]
    xyz = _layer_xyz(layer)
    inside = tissue.inside(xyz).reshape(layer.data.shape)
    assert 0.1 < inside.mean() < 0.95
    assert np.isnan(layer.data[~inside]).all()  # outside tissue: NaN = transparent
    truth = tissue.truth(xyz, ["LayerB"])[:, 0].reshape(layer.data.shape)
    np.testing.assert_allclose(layer.data[inside], truth[inside], rtol=1e-5, atol=1e-5)
    before = np.array(layer.scale)
    n_layers = len(viewer.layers)
    cam = viewer.scene.camera
    cam.zoom = cam.zoom * 4
    _wait(qtbot, w)
    after = np.array(layer.scale)
    assert np.all(after < before / 3)  # ~4× finer sampling, not a blown-up fixed grid
    assert len(viewer.layers) == n_layers and w.plane_layers["LayerB"] is layer  # layer reused
    # screen resolution: about one field sample per canvas pixel
    assert 2 ** -0.25 / cam.zoom - 1e-9 <= after[0] <= 1 / cam.zoom


def test_z_between_sections_is_the_field_there_not_a_section(view_sections, qtbot, tissue):
    viewer, w, _ = view_sections
    layer = w.plane_layers["LayerB"]
    planes = {}
    for z in (30.0, 60.0, 45.0, 280.0):  # 280 lies beyond the last section (270)
        w.z_slider.setValue(z)
        _wait(qtbot, w)
        assert layer.metadata["z_um"] == pytest.approx(z)
        planes[z] = layer.data.copy()
    a, b, mid = planes[30.0], planes[60.0], planes[45.0]
    both = np.isfinite(a) & np.isfinite(b) & np.isfinite(mid)
    assert both.mean() > 0.1
    assert np.abs(mid - a)[both].mean() > 1e-3 and np.abs(mid - b)[both].mean() > 1e-3
    w.set_z(45.0, sync=True)
    xyz = _layer_xyz(layer)
    inside = tissue.inside(xyz).reshape(layer.data.shape)
    truth = tissue.truth(xyz, ["LayerB"])[:, 0].reshape(layer.data.shape)
    np.testing.assert_allclose(layer.data[inside], truth[inside], rtol=1e-5, atol=1e-5)
    assert np.isfinite(planes[280.0]).any()
    # napari's own z slider moves the plane too
    viewer.dims.set_point(0, 120.0)
    _wait(qtbot, w)
    assert w.z == pytest.approx(120.0) and layer.metadata["z_um"] == pytest.approx(120.0)


def test_typed_z_beyond_the_stack_stays_and_scrubbing_moves_napari_z_per_step(view_sections, qtbot):
    """A z typed beyond the sections (napari's slider cannot go there) keeps the plane there, also
    when napari's dims change around it; scrubbing moves napari's z (which re-slices every
    section layer) once per step of its slider, with the plane, not at every event."""
    from qtpy.QtCore import Qt

    viewer, w, _ = view_sections
    viewer.dims.set_current_step(0, 8)  # the user moved napari's own z slider first
    _wait(qtbot, w)
    assert w.z == pytest.approx(8.0)
    layer = w.plane_layers["LayerB"]
    spin = w.zctl.z_spin
    for typed in ("280", "-30"):  # beyond the last (270) and the first (0) section
        spin.lineEdit().selectAll()
        qtbot.keyClicks(spin.lineEdit(), typed)
        qtbot.keyClick(spin.lineEdit(), Qt.Key.Key_Return)
        _wait(qtbot, w)
        extra = viewer.add_points([[400.0, 10.0, 10.0]], name="extra", units="µm")  # the dims range changes
        qtbot.wait(100)
        viewer.layers.remove(extra)
        _wait(qtbot, w)
        assert w.z == pytest.approx(float(typed)) and spin.value() == pytest.approx(float(typed))
        assert layer.metadata["z_um"] == pytest.approx(float(typed))
    # a new field handed over (Train ends, Resume) keeps the z shown, not napari's slider's
    from napari_inrst.viewer.session import publish_field

    publish_field(viewer, counting_field(SyntheticTissue(n_genes=40, depth=270.0, seed=0), GENES), "Train")
    _wait(qtbot, w)
    layer = w.plane_layers[w.genes[0]]
    assert w.z == pytest.approx(-30.0) and layer.metadata["z_um"] == pytest.approx(-30.0)
    # napari's own slider still moves the plane after its range changed
    extra = viewer.add_points([[500.0, 10.0, 10.0]], name="extra", units="µm")
    qtbot.wait(50)
    viewer.dims.set_current_step(0, 50)
    _wait(qtbot, w)
    assert w.z == pytest.approx(50.0) and layer.metadata["z_um"] == pytest.approx(50.0)
    viewer.layers.remove(extra)
    _wait(qtbot, w)
    points = []
    viewer.dims.events.point.connect(lambda e: points.append(float(viewer.dims.point[0])))
    for k in range(40):  # a drag of the View's z slider: 40 events over 12 µm
        w.z_slider.setValue(100.0 + 0.3 * k)
        qtbot.wait(5)
    _wait(qtbot, w)
    assert w.z == pytest.approx(111.7) and layer.metadata["z_um"] == pytest.approx(111.7)
    assert viewer.dims.point[0] == pytest.approx(112.0)  # on napari's 1 µm grid, where the plane is
    assert 1 <= len(points) <= 13, points  # at most once per 1 µm step, not 40 times


def test_gene_switch_second_gene_and_search(view, qtbot, tissue):
    viewer, w, field = view
    n = field.latent_points
    w.gene.setCurrentText("BlobA")  # replaces LayerB
    _wait(qtbot, w)
    assert list(w.plane_layers) == ["BlobA"] and field.latent_points == n  # decode only
    w.add_gene("Boundary")
    _wait(qtbot, w)
    assert set(w.plane_layers) == {"BlobA", "Boundary"} and field.latent_points == n
    assert w.plane_layers["Boundary"].colormap.name != w.plane_layers["BlobA"].colormap.name
    blend = sorted((list(viewer.layers).index(lyr), lyr.blending) for lyr in w.plane_layers.values())
    assert [b for _, b in blend] == ["translucent_no_depth", "additive"]
    lyr = w.plane_layers["Boundary"]
    truth = tissue.truth(_layer_xyz(lyr), ["Boundary"])[:, 0].reshape(lyr.data.shape)
    ok = np.isfinite(lyr.data)
    np.testing.assert_allclose(lyr.data[ok], truth[ok], rtol=1e-5, atol=1e-5)
    # the gene search finds genes by prefix (then by substring)
    assert w.gene.search("lay")[:3] == ["LayerA", "LayerB", "LayerC"]
    assert w.gene.search("Bou") == ["Boundary"]
    assert w.gene.search("G01")[:3] == ["G010", "G011", "G012"]


def test_volume_appears_masked_and_its_screenshot_is_not_blank(view, qtbot, tissue, tmp_path):
    viewer, w, field = view
    w.resolution.setValue(64)
    viewer.dims.ndisplay = 3
    _wait(qtbot, w, timeout=60000)
    vol = w.volume_layers["LayerB"]
    assert vol.data.ndim == 3 and vol.visible and vol.rendering == "mip"
    assert not w.plane_layers["LayerB"].visible
    grid = vol.metadata["grid"]
    assert max(grid.shape) == 64 and tuple(vol.scale) == pytest.approx(grid.scale)
    # the field's own axes are named (the viewer holds only the field here): z / y / x, not -3 / -2 / -1
    assert tuple(vol.axis_labels) == ("z", "y", "x") and tuple(w.plane_layers["LayerB"].axis_labels) == ("y", "x")
    assert tuple(viewer.dims.axis_labels) == ("z", "y", "x")
    viewer.reset_view()
    img = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float)
    assert img.std() > 10 and (img.sum(-1) > 60).mean() > 0.02
    for mode in ("attenuated_mip", "iso"):
        w.rendering.setCurrentText(mode)
        assert vol.rendering == mode
    n = field.latent_points
    w.gene.setCurrentText("BlobA")
    _wait(qtbot, w, timeout=60000)
    assert "BlobA" in w.volume_layers and field.latent_points == n  # cached latent, no trunk run
    path = w.save_volume(tmp_path / "field.ome.zarr")
    from napari_inrst.io.ome import read_volume

    arr, meta = read_volume(path)
    inside = tissue.inside(grid.points().astype(np.float64)).reshape(grid.shape)
    assert np.isnan(arr[0][~inside]).all() and np.isfinite(arr[0][inside]).all()
    assert meta["scale_zyx"] == pytest.approx(grid.scale)


def test_sections_overlay_toggles_and_high_res_screenshot(view_sections, qtbot, tmp_path):
    from napari_inrst._qt.common import section_layers

    viewer, w, _ = view_sections
    pts = section_layers(viewer)
    assert len(pts) == 8
    w.sections_box.setChecked(False)
    assert not any(lyr.visible for lyr in pts)
    w.sections_box.setChecked(True)
    assert all(lyr.visible for lyr in pts)
    w.z = 0.0
    w.snap_to_section()
    _wait(qtbot, w)
    assert w.z in [float(p.metadata["z_um"]) for p in pts]
    # an on-canvas colorbar per shown gene (default on) and the µm scale bar; the checkbox hides them
    assert w.plane_layers["LayerB"].colorbar.visible and viewer.canvas.overlays.scale_bar.visible
    with_bar = viewer.screenshot(canvas_only=True, flash=False)
    w.colorbar_box.setChecked(False)
    assert not w.plane_layers["LayerB"].colorbar.visible
    base = viewer.screenshot(canvas_only=True, flash=False)
    assert np.abs(with_bar[..., :3].astype(int) - base[..., :3]).sum() > 0  # the bar was drawn
    img = w.screenshot(tmp_path / "fig.png", scale=2, background="white")
    assert img.shape[0] == pytest.approx(2 * base.shape[0], abs=2)
    assert (tmp_path / "fig.png").exists()
    assert img[..., :3].mean() > base[..., :3].mean()  # white background
    assert not w.plane_layers["LayerB"].colorbar.visible  # the figure's colorbar is not left behind


def test_trained_model_plane_is_band_limited_but_follows_the_screen(make_napari_viewer, qtbot, tmp_path):
    """A FieldModel (declares its finest scale) is sampled coarsely and resampled to the canvas:
    the layer still gets finer as the user zooms; turning band-limiting off evaluates every pixel."""
    pytest.importorskip("torch")
    from napari_inrst._qt.view import ViewWidget
    from napari_inrst.field import FieldConfig
    from napari_inrst.field.model import FieldModel
    from napari_inrst.field.spec import ModelConfig
    from napari_inrst.render.plane import evaluate_plane

    lo, hi = np.array([0.0, 0, 0]), np.array([2000.0, 1500, 270])
    arch = {"encoding": "fourier", "center": ((lo + hi) / 2).tolist(), "extent": (hi - lo).tolist(),
            "n_freq": [4, 4, 2], "min_wavelength": [100.0, 100.0, 60.0], "width": 16, "depth": 2,
            "rank": 3, "n_genes": 3, "seed": 0}
    spec = ModelConfig.from_arch(arch)
    model = FieldModel(spec.build(), genes=["A", "B", "C"], mean=np.ones(3), std=np.ones(3), spec=spec,
                       config=FieldConfig(width=16, depth=2, rank=3), normalize="log1p",
                       stack_meta={"z": [0.0, 270.0]}, bounds=(lo, hi))
    path = tmp_path / "m.inrst"
    model.save(path)
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(760, 480)
    w = ViewWidget(viewer)
    qtbot.addWidget(w)
    assert w.load_model(path) is not None
    _wait(qtbot, w)
    layer = w.plane_layers["A"]
    before = np.array(layer.scale)
    viewer.scene.camera.zoom *= 8
    _wait(qtbot, w)
    after = np.array(layer.scale)
    assert np.all(after < before / 4) and after[0] < 25.0 / 4  # finer than the 25 µm samples
    grid = layer.metadata["grid"]
    exact = evaluate_plane(w.field, grid, [0], masked=False)[0]
    ok = np.isfinite(layer.data)
    assert ok.sum() > 100  # an untrained occupancy head: some of the view counts as tissue
    lo_c, hi_c = w.contrast["A"]  # the gene's displayed range over the whole field
    assert np.abs(layer.data[ok] - exact[ok]).max() < 0.05 * (hi_c - lo_c)  # accuracy: test_render.py
    w.band_box.setChecked(False)  # exact: every pixel
    _wait(qtbot, w)
    masked = evaluate_plane(w.field, grid, [0])[0]
    np.testing.assert_array_equal(np.isnan(layer.data), np.isnan(masked))
    ok = np.isfinite(masked)
    np.testing.assert_allclose(layer.data[ok], exact[ok], rtol=1e-5, atol=1e-6)
    w.cleanup()


def test_picks_up_the_field_the_train_widget_left_in_the_viewer(make_napari_viewer, qtbot, tissue):
    from napari_inrst._qt.view import ViewWidget

    viewer = make_napari_viewer(show=True)
    viewer.window.resize(760, 480)
    w = ViewWidget(viewer)
    qtbot.addWidget(w)
    assert w.field is None
    field = TruthField(tissue, GENES[:3])
    viewer.add_image(np.zeros((8, 8), np.float32), name="preview", metadata={"inrst_field": field},
                     scale=(250, 250))
    assert w.field is field and w.gene.count() == 3
    _wait(qtbot, w)
    assert w.plane_layers and np.isfinite(next(iter(w.plane_layers.values())).data).any()
    w.cleanup()


# --- movies (napari-animation) --------------------------------------------------------------
def _read_frames(path):
    """RGB frames of a movie: a folder of PNGs, a GIF or an MP4."""
    from pathlib import Path

    from PIL import Image

    path = Path(path)
    if path.is_dir():
        return [np.asarray(Image.open(p).convert("RGB")).astype(float) for p in sorted(path.glob("*.png"))]
    if path.suffix == ".gif":
        im, out = Image.open(path), []
        for i in range(im.n_frames):
            im.seek(i)
            out.append(np.asarray(im.convert("RGB")).astype(float))
        return out
    import imageio

    with imageio.get_reader(str(path)) as r:
        return [np.asarray(f)[..., :3].astype(float) for f in r]


def test_z_sweep_movie_frames_are_the_plane_at_each_z(view, qtbot, tmp_path):
    """Each frame of the sweep is the View widget's own plane at that z (same view, colormap and
    contrast); the planes are evaluated in a worker and the viewer is restored afterwards."""
    pytest.importorskip("napari_animation")
    from napari_inrst.errors import InputError

    viewer, w, _ = view
    layers_before, z_before = list(viewer.layers), w.z
    zs = np.linspace(20.0, 250.0, 5)
    path = tmp_path / "sweep"  # no suffix: a folder of PNG frames
    with qtbot.waitSignal(w.movieFinished, timeout=60000) as sig:
        worker = w.make_movie(path, kind="z", frames=5, fps=5, z_range=(zs[0], zs[-1]))
        assert worker is not None  # planes are evaluated off the UI thread
    assert sig.args[0] == path
    frames = _read_frames(path)
    assert len(frames) == 5 and all(f.std() > 10 for f in frames)
    assert min(np.abs(a - b).mean() for a, b in zip(frames, frames[1:])) > 1.0  # the plane changes with z
    assert list(viewer.layers) == layers_before and w.plane_layers["LayerB"].visible and w.z == z_before
    assert viewer.dims.ndim == 2 and not w.movie_busy
    # frame i shows what the widget shows at zs[i]
    for i, z in enumerate(zs):
        w.set_z(z, sync=True)
        shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float)
        err = [np.abs(shot - f).mean() for f in frames]
        assert int(np.argmin(err)) == i and err[i] < 2.0, (i, err)
    with pytest.raises(InputError, match="mp4"):
        w.make_movie(tmp_path / "x.avi", kind="z")
    with pytest.raises(InputError, match="3D volume"):
        w.make_movie(tmp_path / "x.mp4", kind="rotate")


def test_rotation_movie_turns_the_volume_in_mp4_and_gif(view, qtbot, tmp_path):
    pytest.importorskip("napari_animation")
    viewer, w, _ = view
    w.resolution.setValue(64)
    viewer.dims.ndisplay = 3
    _wait(qtbot, w, timeout=60000)
    viewer.reset_view()
    angles = tuple(viewer.scene.camera.angles)
    for name in ("turn.mp4", "turn.gif"):
        with qtbot.waitSignal(w.movieFinished, timeout=60000) as sig:
            w.make_movie(tmp_path / name, kind="rotate", frames=6, fps=6)
        assert sig.args[0] == tmp_path / name
        frames = _read_frames(tmp_path / name)
        assert len(frames) == 6 and all(f.std() > 5 for f in frames)
        diffs = [np.abs(a - b).mean() for a, b in zip(frames, frames[1:])]
        assert min(diffs) > 1.0, diffs  # every frame turned
        assert tuple(viewer.scene.camera.angles) == pytest.approx(angles)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["turn.gif", "turn.mp4"]  # nothing temporary left


def test_z_sweep_movie_with_sections_moves_napari_z_too(view_sections, qtbot, tmp_path):
    """With the measured sections in the viewer (3D points, napari has a z slider) the sweep moves
    napari's z with the plane, so sections appear as the sweep passes them; all is restored."""
    pytest.importorskip("napari_animation")
    viewer, w, _ = view_sections
    w.snap_to_section()
    _wait(qtbot, w)
    layers_before, point_before = list(viewer.layers), tuple(viewer.dims.point)
    seen = []
    viewer.dims.events.point.connect(lambda e: seen.append(float(viewer.dims.point[-3])))
    path = tmp_path / "sweep.mp4"
    with qtbot.waitSignal(w.movieFinished, timeout=60000):
        w.make_movie(path, kind="z", frames=4, fps=4, z_range=(0.0, 270.0))
    frames = _read_frames(path)
    assert len(frames) == 4
    assert min(np.abs(a - b).mean() for a, b in zip(frames, frames[1:])) > 1.0
    assert min(seen) <= 1.0 and max(seen) >= 269.0  # napari's z followed the sweep
    assert list(viewer.layers) == layers_before and viewer.dims.ndim == 3
    assert tuple(viewer.dims.point) == pytest.approx(point_before)
