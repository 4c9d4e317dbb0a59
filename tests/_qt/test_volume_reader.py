"""An OME-Zarr volume written by napari-inrst opens in napari through the plugin's reader: lazily
(dask over zarr, every pyramid level), multiscale, in µm — and shows in 2D and 3D."""

import numpy as np
import pytest

from napari_inrst.field import TruthField
from napari_inrst.render import volume_grid
from napari_inrst.render.volume import write_field_volume
from napari_inrst.synthetic.sample import SyntheticTissue


@pytest.fixture(scope="module")
def volume_path(tmp_path_factory):
    tissue = SyntheticTissue(n_genes=40, depth=270.0, seed=0)
    field = TruthField(tissue, ["LayerA", "BlobA"])
    grid = volume_grid(field.bounds(), shape=(16, 150, 300), budget_bytes=float("inf"))
    path = tmp_path_factory.mktemp("zarr") / "field.ome.zarr"
    write_field_volume(path, field, grid, [0, 1], slab_bytes=2**20)
    return path, grid


def test_open_zarr_in_napari_is_lazy_multiscale_in_micrometers(make_napari_viewer, qtbot, volume_path):
    path, grid = volume_path
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(760, 480)
    layers = viewer.open(str(path), plugin="napari-inrst")
    assert [lyr.name for lyr in layers] == ["LayerA · field", "BlobA · field"]
    lyr = layers[0]
    assert lyr.multiscale and len(lyr.data) >= 2
    assert all(not isinstance(d, np.ndarray) and hasattr(d, "dask") for d in lyr.data)  # not loaded
    assert lyr.data[0].shape == grid.shape and lyr.data[-1].shape[2] <= 256
    assert tuple(lyr.scale) == pytest.approx(grid.scale) and tuple(lyr.translate) == pytest.approx(grid.translate)
    assert {str(u) for u in lyr.units} == {"micrometer"}
    qtbot.wait(100)
    img = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float)
    assert img.std() > 10 and (img.sum(-1) > 60).mean() > 0.02
    viewer.dims.ndisplay = 3
    viewer.reset_view()
    qtbot.wait(100)
    img3 = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float)
    assert img3.std() > 10 and lyr.data_level == len(lyr.data) - 1  # 3D shows the coarsest level
