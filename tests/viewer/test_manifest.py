"""The npe2 manifest ships inside the package, is registered by entry point, and every command resolves."""

import importlib
from importlib.metadata import entry_points


def test_manifest_is_registered_and_valid():
    from npe2 import PluginManifest

    eps = [ep for ep in entry_points(group="napari.manifest") if ep.name == "napari-inrst"]
    assert len(eps) == 1 and eps[0].value == "napari_inrst:napari.yaml"
    mf = PluginManifest.from_distribution("napari-inrst")
    assert mf.name == "napari-inrst"
    keys = {s.key for s in mf.contributions.sample_data}
    assert {"synthetic", "synthetic_aligned"} <= keys
    assert {w.display_name for w in mf.contributions.widgets} >= {"Sections", "Align", "Train", "View field", "QC"}


def test_every_command_resolves_to_a_callable():
    from npe2 import PluginManifest

    mf = PluginManifest.from_distribution("napari-inrst")
    for cmd in mf.contributions.commands:
        mod, attr = cmd.python_name.split(":")
        assert callable(getattr(importlib.import_module(mod), attr)), cmd.python_name


def test_core_imports_without_qt_or_torch():
    import subprocess
    import sys

    code = (
        "import sys; import napari_inrst, napari_inrst.io, napari_inrst.stack, napari_inrst.synthetic.sample, "
        "napari_inrst.viewer.layers, napari_inrst.viewer.hooks, napari_inrst.cli; "
        "bad = [m for m in ('torch', 'PyQt6', 'qtpy', 'napari') if m in sys.modules]; "
        "assert not bad, bad"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
