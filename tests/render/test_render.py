"""Rendering core (no Qt): grids, planes and volumes against the synthetic sample's analytic truth,
the latent cache (gene switch without a trunk run), volume files with physical scale, the CLI."""

import numpy as np
import pytest

from napari_inrst.errors import InputError
from napari_inrst.render import (
    LatentCache,
    evaluate_plane,
    plane_for_view,
    plane_from_extent,
    render_plane,
    render_volume,
    volume_grid,
)
from napari_inrst.synthetic.sample import SyntheticTissue

from ..conftest import counting_field

GENES = ["LayerA", "LayerB", "BlobA", "Boundary", "G010", "G011"]


@pytest.fixture(scope="module")
def tissue():
    # the sample's geometry (same seed and size) with fewer genes: fast analytic truth
    return SyntheticTissue(n_genes=40, depth=270.0, seed=0)


@pytest.fixture()
def field(tissue):
    return counting_field(tissue, GENES)


def _grid_xyz(grid):
    return grid.points().astype(np.float64)


def test_plane_matches_truth_and_is_nan_outside_tissue(field, tissue):
    grid = plane_from_extent(45.0, (0, 2000, 0, 1500), (60, 80))
    vals = evaluate_plane(field, grid, [0, 2])
    assert vals.shape == (2, 60, 80) and vals.dtype == np.float32
    xyz = _grid_xyz(grid)
    inside = tissue.inside(xyz).reshape(60, 80)
    assert 0.2 < inside.mean() < 0.95  # both tissue and background in view
    assert np.isnan(vals[:, ~inside]).all() and np.isfinite(vals[:, inside]).all()
    truth = tissue.truth(xyz, ["LayerA", "BlobA"]).T.reshape(2, 60, 80)
    np.testing.assert_allclose(vals[:, inside], truth[:, inside], rtol=1e-5, atol=1e-5)
    # pixel centres: napari's translate + i * scale
    assert grid.translate == pytest.approx((1500 / 120, 2000 / 160)) and grid.scale == pytest.approx((25, 25))


def test_render_plane_between_sections_differs_from_neighbours(field, tissue):
    a, b, mid = (render_plane(field, "LayerB", z, shape=64) for z in (30.0, 60.0, 45.0))
    both = np.isfinite(a) & np.isfinite(b) & np.isfinite(mid)
    assert np.abs(mid - a)[both].mean() > 1e-3 and np.abs(mid - b)[both].mean() > 1e-3
    assert not np.allclose(mid[both], (a[both] + b[both]) / 2, atol=1e-4)  # not a blend of sections
    unmasked = render_plane(field, ["LayerB"], 45.0, shape=64, masked=False)
    assert unmasked.shape == (1, *mid.shape) and np.isfinite(unmasked).all()


def test_view_grid_gets_finer_when_zooming_and_clips_to_bounds(field):
    b = field.bounds()
    g1 = plane_for_view(45.0, (750, 1000), 0.4, (600, 800), b)
    g2 = plane_for_view(45.0, (750, 1000), 1.6, (600, 800), b)
    for g, zoom in ((g1, 0.4), (g2, 1.6)):  # screen resolution (pixel size on a 2^(k/4) ladder)
        assert 2 ** -0.25 / zoom - 1e-9 <= g.dx <= 1 / zoom
    assert 600 <= g2.ny <= 600 * 2 ** 0.25 + 64 and 800 <= g2.nx <= 800 * 2 ** 0.25 + 64  # covers the canvas
    assert plane_for_view(45.0, (750, 1000), 1.62, (600, 800), b) == g2  # a tiny zoom: same grid (cache hit)
    xmin, xmax, ymin, ymax = g1.extent()
    assert xmin >= -0.1 * 2000 - g1.dx and xmax <= 2000 * 1.1 + g1.dx  # zoomed out: only the data
    assert plane_for_view(45.0, (1e6, 1e6), 1.0, (600, 800), b) is None
    big = plane_for_view(45.0, (750, 1000), 0.4, (6000, 8000), b, max_side=256)
    assert max(big.ny, big.nx) <= 256 + 32


def test_gene_switch_reuses_cached_latent(field):
    cache = LatentCache()
    grid = plane_from_extent(100.0, (0, 2000, 0, 1500), (40, 50))
    a = evaluate_plane(field, grid, [0], cache=cache)
    n = field.latent_points
    assert 0 < n <= 40 * 50  # trunk only on points inside tissue
    b = evaluate_plane(field, grid, [3, 1], cache=cache)
    assert field.latent_points == n and cache.hits == 1  # decode only
    ref = evaluate_plane(field, grid, [3, 1])
    np.testing.assert_array_equal(b, ref)
    assert not np.allclose(np.nan_to_num(a[0]), np.nan_to_num(b[1]))


def test_cache_budget_evicts_least_recently_used(field):
    grids = [plane_from_extent(z, (0, 2000, 0, 1500), (30, 30)) for z in (0, 50, 100, 150)]
    probe = LatentCache()
    evaluate_plane(field, grids[0], [0], cache=probe)
    cache = LatentCache(budget_bytes=2.5 * probe.nbytes)
    for g in grids:
        evaluate_plane(field, g, [0], cache=cache)
    assert len(cache) < 4 and cache.nbytes <= cache.budget
    n = field.latent_points
    evaluate_plane(field, grids[-1], [1], cache=cache)
    assert field.latent_points == n  # the newest one is kept
    evaluate_plane(field, grids[0], [1], cache=cache)
    assert field.latent_points > n  # the oldest one was evicted


def test_volume_matches_truth_masks_and_caches(field, tissue):
    cache = LatentCache()
    vol, grid = render_volume(field, ["BlobA"], shape=(6, 12, 16), cache=cache)
    assert vol.shape == (1, 6, 12, 16) and grid.shape == (6, 12, 16)
    lo, hi = field.bounds()
    assert grid.translate[0] - grid.scale[0] / 2 == pytest.approx(lo[2])
    assert grid.translate[2] + (grid.nx - 0.5) * grid.scale[2] == pytest.approx(hi[0])
    xyz = grid.points().astype(np.float64)
    inside = tissue.inside(xyz).reshape(grid.shape)
    assert np.isnan(vol[0][~inside]).all()
    np.testing.assert_allclose(vol[0][inside], tissue.truth(xyz, ["BlobA"])[:, 0].reshape(grid.shape)[inside],
                               rtol=1e-5, atol=1e-5)
    n = field.latent_points
    other, _ = render_volume(field, "LayerA", shape=(6, 12, 16), cache=cache)
    assert field.latent_points == n and other.shape == (6, 12, 16)  # gene switch: no trunk run


def test_volume_grid_resolution_and_memory_budget():
    b = (np.array([0.0, 0, 0]), np.array([2000.0, 1500, 270]))
    g = volume_grid(b, 128)
    assert g.nx == 128 and g.ny == 96 and g.nz == 32  # cubic voxels, thin z kept ≥ resolution/4
    small = volume_grid(b, 512, budget_bytes=64 * 2**20, bytes_per_voxel=8)
    assert small.n * 8 <= 64 * 2**20 and small.nx < 512
    with pytest.raises(InputError):
        volume_grid(b, 4096)
    with pytest.raises(InputError):
        volume_grid(b, shape=(0, 10, 10))


def test_unknown_gene_and_bad_shape_are_input_errors(field):
    with pytest.raises(InputError, match="NotAGene"):
        render_plane(field, "NotAGene", 0.0)
    with pytest.raises(InputError):
        render_plane(field, "LayerA", 0.0, shape=(0, 10))
    with pytest.raises(InputError):
        render_plane(field, "LayerA", 0.0, extent=(10, 0, 0, 10))


@pytest.mark.parametrize("name", ["vol.tif", "vol.ome.zarr"])
def test_volume_files_keep_values_and_physical_scale(tmp_path, field, name):
    from napari_inrst.io.ome import read_volume, save_volume

    vol, grid = render_volume(field, ["LayerA", "BlobA"], shape=(4, 10, 12))
    path = save_volume(tmp_path / name, vol, scale_zyx=grid.scale, translate_zyx=grid.translate,
                       genes=["LayerA", "BlobA"])
    back, meta = read_volume(path)
    np.testing.assert_array_equal(np.isnan(back), np.isnan(vol))
    np.testing.assert_allclose(back, vol, equal_nan=True)
    assert meta["scale_zyx"] == pytest.approx(grid.scale) and meta["genes"] == ["LayerA", "BlobA"]
    assert [p.name for p in tmp_path.iterdir()] == [name]  # nothing temporary left behind


def test_movie_without_napari_animation_says_how_to_install(monkeypatch):
    import sys

    from napari_inrst.render.movie import animation_available, rotation_movie, sweep_movie

    monkeypatch.setitem(sys.modules, "napari_animation", None)  # as if not installed
    assert not animation_available()
    with pytest.raises(RuntimeError, match="pip install napari-animation"):
        sweep_movie(object(), "x.mp4", {0: 0}, {0: 1})
    with pytest.raises(RuntimeError, match="pip install napari-animation"):
        rotation_movie(object(), "x.mp4")


def test_movie_formats():
    from napari_inrst.render.movie import movie_format

    assert movie_format("a/b.mp4") == "mp4" and movie_format("b.GIF") == "gif" and movie_format("frames") == "frames"
    with pytest.raises(InputError, match="mp4"):
        movie_format("b.avi")


# --- CLI ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A small, untrained FieldModel saved to disk (the CLI's I/O does not depend on training)."""
    pytest.importorskip("torch")
    from napari_inrst.field import FieldConfig
    from napari_inrst.field.model import FieldModel
    from napari_inrst.field.spec import ModelConfig

    genes = ["LayerA", "BlobA", "G010"]
    lo, hi = np.array([0.0, 0, 0]), np.array([2000.0, 1500, 270])
    arch = {"encoding": "fourier", "center": ((lo + hi) / 2).tolist(), "extent": (hi - lo).tolist(),
            "n_freq": [4, 4, 2], "min_wavelength": [100.0, 100.0, 60.0], "width": 16, "depth": 2,
            "rank": 3, "n_genes": 3, "seed": 0}
    spec = ModelConfig.from_arch(arch)
    model = FieldModel(spec.build(), genes=genes, mean=np.ones(3), std=np.ones(3), spec=spec,
                       config=FieldConfig(width=16, depth=2, rank=3), normalize="log1p",
                       stack_meta={"names": ["a", "b"], "z": [0.0, 270.0]}, bounds=(lo, hi))
    path = tmp_path_factory.mktemp("model") / "m.inrst"
    model.save(path)
    return path


def _cli(argv):
    from napari_inrst.cli import main

    return main([str(a) for a in argv])


def test_band_limited_sampling_matches_exact_evaluation(model_file):
    """A Fourier field sampled at its finest wavelength / 4 and resampled cubically equals the
    exact per-pixel evaluation (within 1% of the range), with far fewer trunk evaluations."""
    from napari_inrst.field import load_model
    from napari_inrst.render.plane import plane_grid_for
    from napari_inrst.render.resample import field_detail_um

    field = load_model(model_file)
    assert field_detail_um(field) == (100.0, 60.0)
    grid = plane_grid_for(field, 100.0, (0, 2000, 0, 1500), (300, 400))  # 5 µm pixels
    exact = evaluate_plane(field, grid, [0, 1], masked=False)
    span = np.ptp(exact)
    cache = LatentCache()
    band4 = evaluate_plane(field, grid, [0, 1], masked=False, oversample=4, cache=cache)
    err4 = np.abs(band4 - exact)
    assert err4.max() < 0.02 * span and np.sqrt((err4 ** 2).mean()) < 0.005 * span
    assert len(cache) == 1 and next(iter(cache._d.values())).latent.shape[0] < grid.n / 10
    band8 = evaluate_plane(field, grid, [0, 1], masked=False, oversample=8)
    assert np.abs(band8 - exact).max() < 0.002 * span  # cubic: error falls as step^4
    vol_exact, vg = render_volume(field, ["LayerA"], shape=(40, 75, 100), masked=False)
    vol_band, _ = render_volume(field, ["LayerA"], shape=(40, 75, 100), masked=False, oversample=4)
    d = np.abs(vol_band - vol_exact)
    assert d.max() < 0.05 * np.ptp(vol_exact) and np.sqrt((d ** 2).mean()) < 0.01 * np.ptp(vol_exact)
    assert np.abs(vol_band - vol_exact).max() > 0  # the band-limited path really ran


def test_cli_renders_plane_png_and_tiff(model_file, tmp_path):
    import tifffile
    from PIL import Image

    png = tmp_path / "p.png"
    # --shape is x first (NX NY), like --extent and the field's (x, y, z)
    assert _cli(["render", model_file, "--gene", "LayerA", "--z", 100, "--shape", 64, 48, "--out", png]) == 0
    img = np.asarray(Image.open(png))
    assert img.shape == (48, 64, 4) and img[..., 3].max() == 255
    tif = tmp_path / "p.tif"
    assert _cli(["render", model_file, "--gene", "LayerA", "--gene", "BlobA", "--z", 100, "--shape", 64,
                 "--no-mask", "--out", tif]) == 0
    arr = tifffile.imread(tif)
    assert arr.shape == (2, 48, 64) and np.isfinite(arr).all()


def test_cli_renders_volume_slab_by_slab(model_file, tmp_path, monkeypatch):
    """--shape NX NY NZ; the volume reaches the writer in slabs within --slab-mb and equals the
    in-memory render; physical scale and genes are in the file."""
    from napari_inrst.field import load_model
    from napari_inrst.io.ome import VolumeWriter, read_volume

    slabs = []
    orig = VolumeWriter.write
    monkeypatch.setattr(VolumeWriter, "write", lambda self, k0, v: (slabs.append(v.shape), orig(self, k0, v)))
    out = tmp_path / "v.ome.zarr"
    budget_mb = 2 * 4 * 6 * 7 / 2**20  # two z planes of 7 (x) × 6 (y) voxels
    assert _cli(["render", model_file, "--gene", "BlobA", "--volume", "--shape", 7, 6, 5, "--no-mask",
                 "--slab-mb", budget_mb, "--out", out]) == 0
    assert slabs == [(1, 2, 6, 7), (1, 2, 6, 7), (1, 1, 6, 7)]
    vol, meta = read_volume(out)
    ref, grid = render_volume(load_model(model_file), ["BlobA"], shape=(5, 6, 7), masked=False)
    assert vol.shape == (1, 5, 6, 7)  # stored (c, z, y, x)
    np.testing.assert_allclose(vol, ref, rtol=1e-5, atol=1e-6)
    assert meta["scale_zyx"] == pytest.approx(grid.scale) and meta["genes"] == ["BlobA"]
    assert [p.name for p in tmp_path.iterdir()] == ["v.ome.zarr"]


def test_cli_band_limited_volume_streams_and_matches_in_memory(model_file, tmp_path, capsys, monkeypatch):
    import sys

    from napari_inrst.field import load_model
    from napari_inrst.io.ome import read_volume

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # progress is shown on a terminal only
    out = tmp_path / "v.tif"
    assert _cli(["render", model_file, "--gene", "LayerA", "--gene", "G010", "--volume", "--shape", 100, 75, 40,
                 "--oversample", 4, "--slab-mb", 0.5, "--out", out]) == 0
    err = capsys.readouterr().err
    assert "band-limited" in err and "planes 8/40" in err  # resampled slab by slab
    vol, meta = read_volume(out)
    ref, _ = render_volume(load_model(model_file), ["LayerA", "G010"], shape=(40, 75, 100), oversample=4)
    np.testing.assert_array_equal(np.isnan(vol), np.isnan(ref))
    np.testing.assert_allclose(vol, ref, rtol=1e-4, atol=1e-5, equal_nan=True)
    assert meta["genes"] == ["LayerA", "G010"]


def test_cli_render_help_documents_modes_shape_order_formats_and_scale(capsys):
    from napari_inrst.cli import main

    with pytest.raises(SystemExit):
        main(["render", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for needle in ["--z Z", "--volume", "NX NY NZ", "x, y, z order", ".png", ".tif/.tiff", ".zarr/.ome.zarr",
                   "NGFF 0.4", "multiscale pyramid", "µm", "--slab-mb", "larger than memory"]:
        assert needle in text, needle


def test_cli_volume_disk_full_or_unwritable_exits_2_and_writes_nothing(model_file, tmp_path, monkeypatch, capsys):
    import shutil
    from collections import namedtuple

    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert _cli(["render", model_file, "--gene", "LayerA", "--volume", "--shape", 8, "--out",
                 blocker / "v.zarr"]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and len(err.strip().splitlines()) == 1
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9, 1000))
    assert _cli(["render", model_file, "--gene", "LayerA", "--volume", "--shape", 1024, 1024, 512,
                 "--out", tmp_path / "big.zarr"]) == 2
    err = capsys.readouterr().err
    assert "not enough disk space" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_cli_volume_killed_midway_leaves_nothing(model_file, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    src = str(Path(__file__).resolve().parents[2] / "src")
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    argv = ["render", str(model_file), "--gene", "LayerA", "--volume", "--shape", "1024", "1024", "256",
            "--slab-mb", "1", "--out", str(tmp_path / "v.zarr")]
    proc = subprocess.Popen([sys.executable, "-m", "napari_inrst.cli", *argv],
                            env=env, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not any((tmp_path / p.name / "0").exists() for p in tmp_path.iterdir()) and time.time() - t0 < 60:
        time.sleep(0.1)
    time.sleep(0.5)  # some slabs written
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err  # the CLI's one SIGTERM handler
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [
    ["--gene", "NotAGene", "--z", 0, "--out", "x.png"],
    ["--gene", "LayerA", "--z", 0, "--shape", 0, "--out", "x.png"],
    ["--gene", "LayerA", "--z", 0, "--shape", 1, 2, 3, "--out", "x.png"],
    ["--gene", "LayerA", "--volume", "--shape", 9999, "--out", "x.tif"],
    ["--gene", "LayerA", "--volume", "--shape", 5000, 10, 10, "--out", "x.zarr"],
    ["--gene", "LayerA", "--volume", "--shape", 10, 10, "--out", "x.zarr"],
    ["--gene", "LayerA", "--volume", "--shape", 10, -1, 10, "--out", "x.zarr"],
    ["--gene", "LayerA", "--volume", "--out", "x.png"],
    ["--gene", "LayerA", "--gene", "BlobA", "--z", 0, "--out", "x.png"],
])
def test_cli_bad_input_exits_2_and_writes_nothing(model_file, tmp_path, argv, capsys):
    argv = [a if a not in ("x.png", "x.tif", "x.zarr") else tmp_path / a for a in argv]
    assert _cli(["render", model_file, *argv]) == 2
    assert "error" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_unreadable_model_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.inrst"
    bad.write_bytes(b"not a model")
    assert _cli(["render", bad, "--gene", "A", "--z", 0, "--out", tmp_path / "o.png"]) == 2
    assert "bad.inrst" in capsys.readouterr().err


def test_plane_for_view_stays_inside_a_frame():
    """With a frame (the other layers' extent and finest scale) the plane's pixel centres stay
    inside it and its pixels are no finer than its step: napari's dims range never changes."""
    b = (np.array([0.0, 0.0, 0.0]), np.array([2000.0, 1500.0, 270.0]))
    frame = (10.3, 1990.7, 5.1, 1490.2, 1.0)
    for center, zoom in (((750, 1000), 0.4), ((0, 0), 4.0), ((1500, 2000), 8.0), ((700, 900), 0.05)):
        g = plane_for_view(45.0, center, zoom, (600, 800), b, frame=frame)
        xs, ys = g.x0 + g.dx * np.arange(g.nx), g.y0 + g.dy * np.arange(g.ny)
        assert frame[0] <= xs[0] and xs[-1] <= frame[1] and frame[2] <= ys[0] and ys[-1] <= frame[3]
        assert g.dx >= 1.0
        if zoom == 0.4:  # zoomed out, the frame is covered to within a pixel
            assert xs[0] - frame[0] <= g.dx and frame[1] - xs[-1] <= g.dx
    free = plane_for_view(45.0, (0, 0), 4.0, (600, 800), b)
    assert free.dx < 1.0 and free.x0 < frame[0]  # without a frame: finer pixels, beyond the data
    assert plane_for_view(45.0, (3000, 3000), 1.0, (600, 800), b, frame=frame) is None  # frame not in view
