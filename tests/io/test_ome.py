"""Volumes larger than memory: streamed slab by slab to OME-Zarr (NGFF 0.4, multiscale, µm) or
TIFF, with memory bounded by the slab budget; read back lazily by the napari reader (no Qt here)."""

import json
import tracemalloc

import numpy as np
import pytest

from napari_inrst.errors import InputError
from napari_inrst.render import render_volume, volume_grid
from napari_inrst.io import atomic, ome
from napari_inrst.io.ome import VolumeWriter, block_nanmean, pyramid_plan, read_volume
from napari_inrst.render.volume import write_field_volume

BOUNDS = (np.array([0.0, 0.0, 0.0]), np.array([2000.0, 1500.0, 300.0]))


class RampField:
    """A cheap analytic field (numpy only): an ellipsoid of tissue, two genes that vary along
    every axis. Fast enough to fill tens of millions of voxels in a test."""

    genes = ["ramp", "wave"]
    rank = 4

    def bounds(self):
        return BOUNDS

    def occupancy(self, xyz):
        c, r = np.array([1000.0, 750.0, 150.0]), np.array([950.0, 700.0, 140.0])
        return (((xyz - c) / r) ** 2).sum(1).__le__(1.0).astype(np.float32)

    def latent(self, xyz):
        x, y, z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
        return np.stack([x / 1000, np.sin(y / 97.0), z / 100, np.ones_like(x)], 1).astype(np.float32)

    def decode(self, lat, genes):
        W = np.array([[1.0, 0.2], [0.0, 1.0], [0.5, -0.3], [0.1, 2.0]], dtype=np.float32)
        return lat @ W[:, list(genes)]


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    """A (2, 64, 256, 320) volume (42 MB as float32) written with a 1 MiB slab budget; records
    every slab the writer received and the peak of traced allocations while writing."""
    field = RampField()
    grid = volume_grid(BOUNDS, shape=(64, 256, 320), budget_bytes=float("inf"))
    path = tmp_path_factory.mktemp("vol") / "field.ome.zarr"
    budget = 2**20
    slabs = []
    orig = VolumeWriter.write

    def spy(self, k0, values):
        slabs.append((int(k0), values.shape[1], values.nbytes))
        return orig(self, k0, values)

    # warm up: imports and zarr's first-use allocations are not what is measured
    small = volume_grid(BOUNDS, shape=(4, 8, 8), budget_bytes=float("inf"))
    write_field_volume(path.with_name("warm.zarr"), field, small, [0, 1])
    VolumeWriter.write = spy
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        info = write_field_volume(path, field, grid, [0, 1], slab_bytes=budget, contrast=[(0, 2), (1, 3)])
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
        VolumeWriter.write = orig
    return dict(field=field, grid=grid, path=path, budget=budget, slabs=slabs, peak=peak, info=info)


def test_memory_stays_within_the_slab_budget_never_the_volume(streamed):
    full = 4 * 2 * streamed["grid"].n
    assert full >= 40 * 2**20
    slabs = streamed["slabs"]
    assert len(slabs) > 10 and max(b for *_, b in slabs) <= streamed["budget"]
    # slabs arrive one after the other and cover every z plane once
    assert [k0 for k0, _, _ in slabs] == list(np.cumsum([0] + [n for _, n, _ in slabs[:-1]]))
    assert sum(n for _, n, _ in slabs) == streamed["grid"].nz
    # everything allocated while evaluating, writing and building the pyramid stayed a few slabs,
    # far below one copy of one gene's volume (21 MB)
    peak = streamed["peak"]
    assert peak < min(full / 8, 5 * streamed["budget"]), f"peak traced memory {peak / 2**20:.1f} MiB"


def test_streamed_file_equals_the_in_memory_render(streamed):
    vol, meta = read_volume(streamed["path"])
    ref, grid = render_volume(streamed["field"], [0, 1], shape=streamed["grid"].shape)
    assert vol.shape == (2, 64, 256, 320) and grid == streamed["grid"]
    np.testing.assert_array_equal(np.isnan(vol), np.isnan(ref))
    np.testing.assert_allclose(vol, ref, rtol=1e-6, atol=1e-6, equal_nan=True)
    assert 0.2 < np.isnan(vol).mean() < 0.8  # masked outside the ellipsoid
    assert meta["scale_zyx"] == pytest.approx(grid.scale) and meta["translate_zyx"] == pytest.approx(grid.translate)
    assert meta["genes"] == ["ramp", "wave"]


def test_ome_zarr_is_ngff_0_4_with_a_pyramid_in_micrometers(streamed):
    path, grid = streamed["path"], streamed["grid"]
    attrs = json.loads((path / ".zattrs").read_text())
    ms = attrs["multiscales"]
    assert len(ms) == 1 and ms[0]["version"] == "0.4"
    axes = ms[0]["axes"]
    assert [a["name"] for a in axes] == ["c", "z", "y", "x"]
    assert [a["type"] for a in axes] == ["channel", "space", "space", "space"]
    assert all(a.get("unit") == "micrometer" for a in axes[1:])
    ds = ms[0]["datasets"]
    assert len(ds) >= 2  # x has 320 voxels > 256: at least one coarser level
    prev = None
    for i, d in enumerate(ds):
        assert d["path"] == str(i)
        ct = d["coordinateTransformations"]
        assert [t["type"] for t in ct] == ["scale", "translation"]  # scale first, one each
        scale, trans = ct[0]["scale"], ct[1]["translation"]
        assert len(scale) == len(trans) == 4 and scale[0] == 1.0
        za = json.loads((path / str(i) / ".zarray").read_text())
        assert za["zarr_format"] == 2 and za["dimension_separator"] == "/" and za["dtype"] == "<f4"
        assert len(za["shape"]) == 4 and za["shape"][0] == 2
        # physical extent is kept: shape × voxel size covers the base grid
        ext = np.array(za["shape"][1:]) * np.array(scale[1:])
        assert np.all(ext >= np.array(grid.shape) * np.array(grid.scale) - 1e-6)
        if prev is not None:
            f = np.array(scale[1:]) / np.array(prev[1][1:])
            assert set(np.round(f, 6)) <= {1.0, 2.0} and np.all(np.array(za["shape"][1:]) <= prev[0][1:])
        prev = (za["shape"], scale)
    assert max(prev[0][1:]) <= ome.PYRAMID_COARSEST
    ch = attrs["omero"]["channels"]
    assert [c["label"] for c in ch] == ["ramp", "wave"] and ch[1]["window"]["start"] == 1
    assert attrs["napari_inrst"]["contrast_limits"] == [[0, 2], [1, 3]]
    # level 1 is the NaN-ignoring block mean of level 0
    base, _ = read_volume(path, 0)
    lvl1, meta1 = read_volume(path, 1)
    f = attrs["multiscales"][0]["metadata"]["factors_zyx"][0]
    np.testing.assert_allclose(lvl1, block_nanmean(base, f), rtol=1e-6, equal_nan=True)
    assert meta1["translate_zyx"] == pytest.approx(
        [t + (k - 1) * s / 2 for t, s, k in zip(grid.translate, grid.scale, f)])


def test_pyramid_plan_halves_fine_axes_until_small():
    # cubic voxels: every axis halves
    assert pyramid_plan((512, 1024, 1024), (1, 1, 1)) == [(2, 2, 2)] * 2
    # a thin stack with long z voxels keeps its planes while x and y catch up
    plan = pyramid_plan((8, 2048, 2048), (30.0, 2.0, 2.0))
    assert plan[:3] == [(1, 2, 2)] * 3
    shape = np.array([8, 2048, 2048])
    for f in plan:
        shape = -(-shape // np.array(f))
    assert shape.max() <= 256 and shape[0] >= 4
    assert pyramid_plan((64, 200, 100), (1, 1, 1)) == []


def test_tiff_volume_is_streamed_in_z_order(tmp_path):
    field = RampField()
    grid = volume_grid(BOUNDS, shape=(9, 30, 40), budget_bytes=float("inf"))
    path = tmp_path / "v.tif"
    write_field_volume(path, field, grid, [1], slab_bytes=3 * 4 * 30 * 40)
    vol, meta = read_volume(path)
    ref, _ = render_volume(field, [1], shape=grid.shape)
    np.testing.assert_allclose(vol, ref, rtol=1e-6, equal_nan=True)
    assert meta["scale_zyx"] == pytest.approx(grid.scale, rel=1e-5) and meta["genes"] == ["wave"]
    import tifffile

    with tifffile.TiffFile(path) as tf:  # ImageJ sees 9 z slices of one channel
        assert tf.imagej_metadata["slices"] == 9 and tf.imagej_metadata.get("channels", 1) == 1
        assert tf.imagej_metadata["unit"] == "um"
    w = VolumeWriter(tmp_path / "w.tif", (1, 4, 3, 3), scale_zyx=(1, 1, 1))
    w.write(0, np.zeros((1, 2, 3, 3)))
    with pytest.raises(ValueError, match="z order"):
        w.write(3, np.zeros((1, 1, 3, 3)))
    w.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.tif"]


@pytest.mark.parametrize("name", ["v.ome.zarr", "v.tif"])
def test_disk_full_while_writing_leaves_nothing(tmp_path, monkeypatch, name):
    import errno

    calls = []
    orig = VolumeWriter.write

    def fail_second(self, k0, values):
        calls.append(k0)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return orig(self, k0, values)

    monkeypatch.setattr(VolumeWriter, "write", fail_second)
    grid = volume_grid(BOUNDS, shape=(6, 20, 30), budget_bytes=float("inf"))
    with pytest.raises(InputError, match="not enough disk space"):
        write_field_volume(tmp_path / name, RampField(), grid, [0], slab_bytes=4 * 20 * 30)
    assert list(tmp_path.iterdir()) == []


def test_free_space_is_checked_before_writing(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 10**6, 10**6))
    with pytest.raises(InputError, match="not enough disk space"):
        atomic.check_free_space(tmp_path / "v.zarr", ome.volume_bytes((1, 512, 1024, 1024)))
    atomic.check_free_space(tmp_path / "v.zarr", 10**5)


def test_reader_opens_only_its_own_zarr_lazily(streamed, tmp_path):
    import zarr

    from napari_inrst.viewer.hooks import get_reader, read_volume_layers

    assert get_reader(str(streamed["path"])) is read_volume_layers
    plain = tmp_path / "other.zarr"
    g = zarr.open_group(str(plain), mode="w")
    g.attrs["multiscales"] = [{"version": "0.4"}]
    assert get_reader(str(plain)) is None
    layers = read_volume_layers(str(streamed["path"]))
    assert [kw["name"].split(" · ")[0] for _, kw, _ in layers] == ["ramp", "wave"]
    data, kw, kind = layers[1]
    assert kind == "image" and kw["multiscale"] and len(data) >= 2
    assert all(not isinstance(d, np.ndarray) and hasattr(d, "dask") for d in data)  # lazy
    assert data[0].shape == (64, 256, 320)
    assert kw["scale"] == pytest.approx(streamed["grid"].scale) and kw["units"] == "µm"
    assert kw["contrast_limits"] == (1, 3)


def test_reader_reports_a_damaged_volume_in_one_line(streamed, tmp_path, monkeypatch):
    import shutil

    from napari_inrst.viewer import hooks as _napari

    bad = tmp_path / "damaged.zarr"
    shutil.copytree(streamed["path"], bad)
    shutil.rmtree(bad / "0")  # the full-resolution level is gone
    errors = []
    monkeypatch.setattr(_napari, "_notify_error", lambda exc: errors.append(str(exc)))
    assert _napari.get_reader(str(bad)) is _napari.read_volume_layers
    assert _napari.read_volume_layers(str(bad)) == [(None,)]
    assert len(errors) == 1 and "damaged.zarr" in errors[0] and "\n" not in errors[0]
