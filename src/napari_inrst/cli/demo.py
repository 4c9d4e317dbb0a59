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


#: 3D camera of the demo (napari Euler angles, degrees): the section planes seen at a slant
DEMO_ANGLES = (-65.0, 20.0, 100.0)
#: width of the tabbed dock (px): the widgets fit, the canvas keeps the rest
DOCK_WIDTH = 430


def fit_window(viewer, docks, dock_width: int = DOCK_WIDTH):
    """Size the window to the screen (at most 1600 × 1000) and the tabbed dock to ``dock_width``,
    so the docks never squeeze the canvas (nor grow the window past the screen)."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication, QDockWidget

    screen = QApplication.primaryScreen()
    avail = screen.availableGeometry() if screen is not None else None
    w = min(1600, avail.width()) if avail is not None else 1600
    h = min(1000, avail.height()) if avail is not None else 1000
    viewer.window.resize(w, h)
    qdocks = [d for d in docks if isinstance(d, QDockWidget)]
    if qdocks and qdocks[0].parentWidget() is not None:
        qdocks[0].parentWidget().resizeDocks(qdocks, [dock_width] * len(qdocks), Qt.Orientation.Horizontal)


def open_demo(aligned: bool = False, ndisplay: int = 3, viewer=None):
    """Load the sample and dock the widgets into ``viewer`` (a new one if None)."""
    import napari

    from ..render.screenshot import viewer_camera, viewer_overlay

    viewer = viewer or napari.Viewer(title="napari-inrst demo")
    viewer.open_sample("napari-inrst", "synthetic_aligned" if aligned else "synthetic")
    docks = {}
    for k, name in enumerate(WIDGETS):
        docks[name], _ = viewer.window.add_plugin_dock_widget("napari-inrst", name, tabify=k > 0)
    docks["Train" if aligned else "Align"].raise_()  # the next step of the workflow in front
    fit_window(viewer, list(docks.values()))
    viewer.dims.ndisplay = ndisplay
    viewer.reset_view()
    if ndisplay == 3:
        # steep enough that the sections separate along z (the sample is 2 mm wide, 0.27 mm deep)
        viewer_camera(viewer).angles = DEMO_ANGLES
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
