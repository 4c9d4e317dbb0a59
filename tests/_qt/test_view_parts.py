"""The View widget's child widgets on their own, over a bare view model (no ViewWidget): each gets
what it needs explicitly, and edits/follows the model."""

import numpy as np
import pytest

from napari_inrst.field import TruthField
from napari_inrst.synthetic.sample import SyntheticTissue


def test_children_work_without_the_view_widget(make_napari_viewer, qtbot, tmp_path):
    from napari_inrst._qt.view.export import ExportPanel
    from napari_inrst._qt.view.genes import GenePanel
    from napari_inrst._qt.view.movie import MovieMaker
    from napari_inrst._qt.view.renderer import FieldRenderer
    from napari_inrst._qt.view.status import StatusBar
    from napari_inrst._qt.view.volume import VolumePanel
    from napari_inrst._qt.view.zcontrol import ZControl
    from napari_inrst.viewer.field_layers import FieldLayers, frame_bounds
    from napari_inrst.viewer.view_state import ViewState

    viewer = make_napari_viewer(show=True)
    viewer.window.resize(640, 420)
    state = ViewState()
    layers = FieldLayers(viewer, state)
    status = StatusBar()
    genes = GenePanel(state)
    zctl = ZControl(viewer, state, section_z=lambda: [0.0, 90.0, 180.0])
    renderer = FieldRenderer(viewer, state, layers, status, debounce_ms=10)
    volume = VolumePanel(state)
    export = ExportPanel(viewer, state, layers, MovieMaker(viewer, state, layers, status, restore_z=zctl.push_to_dims))
    for w in (status, genes, zctl, volume, export):
        qtbot.addWidget(w)
    state.genes_changed.connect(layers.apply_genes)
    state.z_changed.connect(renderer.schedule)
    field = TruthField(SyntheticTissue(n_genes=12, depth=270.0, seed=0), ["LayerA", "LayerB", "BlobA"])
    state.set_field(field, ["LayerA"], z=40.0)
    assert genes.gene_list.count() == 1 and genes.gene.currentText() == "LayerA"
    assert zctl.z_slider.value() == pytest.approx(40.0) and zctl.z_spin.minimum() == pytest.approx(state.z_range[0])

    # the search box replaces the selected gene; the list follows the model
    genes.gene.setCurrentText("BlobA")
    assert state.genes == ["BlobA"] and genes.gene_list.item(0).text() == "BlobA"
    # typing z moves the model; the debounced renderer shows that plane
    frame_bounds(viewer, field.bounds())
    zctl.z_spin.setValue(95.0)
    assert state.z == pytest.approx(95.0)
    qtbot.waitUntil(lambda: not renderer.busy and "BlobA" in layers.plane, timeout=20000)
    layer = layers.plane["BlobA"]
    assert layer.metadata["z_um"] == pytest.approx(95.0) and np.isfinite(layer.data).any()
    zctl.snap_to_section()
    assert state.z == 90.0

    # the controls follow the model when it is changed elsewhere
    state.set_band_limited(False)
    state.set_colorbars(False)
    state.set_colormap("BlobA", "gray")
    state.set_resolution(64)
    assert volume.resolution.value() == 64
    volume.rendering.setCurrentText("iso")
    assert state.rendering == "iso"
    assert not zctl.band_box.isChecked() and not genes.colorbar_box.isChecked()
    assert genes.colormap.currentText() == "gray"
    state.set_colorbars(True)

    # the export panel needs no widget around it: a figure of what is shown, with its colorbar
    shot = export.screenshot(tmp_path / "fig.png", scale=1, background="black")
    assert (tmp_path / "fig.png").exists() and shot.shape[0] == pytest.approx(viewer.canvas.size[0], abs=2)
    assert shot[..., :3].std() > 5
    with pytest.raises(RuntimeError, match="no volume"):
        export.save_volume(tmp_path / "v.ome.zarr")
    renderer.cleanup()
    zctl.cleanup()
