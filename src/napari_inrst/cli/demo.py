"""``napari-inrst demo``: open napari on the synthetic sample with the plugin's widgets docked."""

from __future__ import annotations

#: the plugin's widgets in workflow order (docked as tabs on the right)
WIDGETS = ["Sections", "Align", "Train", "View field", "QC"]


def add_parser(sub):
    p = sub.add_parser("demo", help="open napari on the synthetic sample with the widgets docked",
                       description="Open napari with the synthetic sample loaded and the plugin's widgets docked.")
    p.add_argument("--aligned", action="store_true", help="load the sample with sections already aligned")
    p.add_argument("--screenshot", metavar="PNG", help="save a screenshot of the window and exit")
    p.add_argument("--ndisplay", type=int, choices=[2, 3], default=3, help="2D or 3D view (default 3)")
    return p


def open_demo(aligned: bool = False, ndisplay: int = 3, viewer=None):
    """Load the sample and dock the widgets into ``viewer`` (a new one if None)."""
    import napari

    from ..render.export import viewer_camera, viewer_overlay

    viewer = viewer or napari.Viewer(title="napari-inrst demo")
    viewer.open_sample("napari-inrst", "synthetic_aligned" if aligned else "synthetic")
    docks = {}
    for k, name in enumerate(WIDGETS):
        docks[name], _ = viewer.window.add_plugin_dock_widget("napari-inrst", name, tabify=k > 0)
    docks["Train" if aligned else "Align"].raise_()  # the next step of the workflow in front
    viewer.dims.ndisplay = ndisplay
    viewer.reset_view()
    if ndisplay == 3:
        viewer_camera(viewer).angles = (-15.0, 35.0, 140.0)  # tilted so the stack of sections shows
    viewer_overlay(viewer, "scale_bar").visible = True
    return viewer


def run(args) -> int:
    import napari

    viewer = open_demo(aligned=args.aligned, ndisplay=args.ndisplay)
    if args.screenshot:
        from qtpy.QtWidgets import QApplication

        for _ in range(5):
            QApplication.processEvents()
        viewer.window.resize(1500, 900)
        QApplication.processEvents()
        viewer.screenshot(args.screenshot, canvas_only=False)
        viewer.close()
        return 0
    napari.run()
    return 0
