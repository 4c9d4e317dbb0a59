"""The QC widget's layers (napari public API, no Qt): the measured | predicted | residual panels
with their titles, the uncertainty volume and plane, the 3D domains. Values come from
:class:`~napari_inrst.viewer.qc_state.QCState`; these functions only place them."""

import numpy as np

from ..viewer.layers import SECTION_KEY
from ..render.display import labels_legend_html, result_on_top, show_own_colorbars
from ..viewer.stack_source import section_layers
from .layers import update_or_add_image

LAYER_MEASURED = "QC measured"
LAYER_PREDICTED = "QC predicted"
LAYER_RESIDUAL = "QC residual"
LAYER_TITLES = "QC titles"
LAYER_UNCERTAINTY = "QC uncertainty"  # the volume (3D display)
LAYER_UNCERTAINTY_PLANE = "QC uncertainty · plane"  # at the current z (2D display)
LAYER_DOMAINS = "QC domains"
#: axis names (napari labels its dims with them: z / y / x, not -3 / -2 / -1)
ZYX = ("z", "y", "x")
#: smallest on-screen size (px) of a cell/spot in the side-by-side panels
MIN_POINT_PX = 4
#: residual colormap: blue (under-predicted) – dark grey (right) – orange (over-predicted);
#: a dark centre keeps good predictions quiet on napari's dark canvas
RESIDUAL_COLORS = [[0.25, 0.55, 1.0, 1.0], [0.22, 0.22, 0.22, 1.0], [1.0, 0.55, 0.1, 1.0]]


def residual_colormap():
    from napari.utils.colormaps import Colormap

    return Colormap(RESIDUAL_COLORS, name="inrst residual")


def put_points(viewer, name, data, values, colormap, contrast, translate_x, size, z):
    """Update or add a Points panel coloured by ``values``. No border (its antialiasing band paints
    small cells grey) and at least MIN_POINT_PX on screen, so dense single-cell sections stay
    readable when the three panels fit the canvas."""
    if name in viewer.layers:
        layer = viewer.layers[name]
        layer.data = data
        layer.size = size
        layer.features = {"value": values}
        layer.face_colormap = colormap
        layer.face_color = "value"
        layer.face_contrast_limits = contrast
        layer.translate = (0.0, 0.0, translate_x)
        layer.metadata["z_um"] = z
        layer.refresh_colors(update_color_mapping=False)
        return layer
    return viewer.add_points(data, name=name, features={"value": values}, face_color="value",
                             face_colormap=colormap, face_contrast_limits=contrast, border_width=0,
                             border_color="transparent", size=size, canvas_size_limits=(MIN_POINT_PX, 10000),
                             out_of_slice_display=False, translate=(0.0, 0.0, translate_x),
                             metadata={"inrst_qc": True, "z_um": z}, units="µm", axis_labels=ZYX)


def put_titles(viewer, z, y, xs, labels, size):
    data = np.array([[z, y, x] for x in xs], dtype=np.float64)
    text = {"string": "{label}", "size": 11, "color": "white", "anchor": "lower_left",
            "translation": [0.0, -1.5 * size, 0.0]}
    if LAYER_TITLES in viewer.layers:
        layer = viewer.layers[LAYER_TITLES]
        layer.data = data
        layer.features = {"label": list(labels)}
        layer.text = text
        return layer
    return viewer.add_points(data, name=LAYER_TITLES, features={"label": list(labels)}, text=text,
                             size=0.01, face_color="transparent", border_width=0, border_color="transparent",
                             canvas_size_limits=(0, 1), out_of_slice_display=False,
                             metadata={"inrst_qc": "titles"}, units="µm", axis_labels=ZYX)


def show_panels(viewer, stack, p: dict):
    """Measured | predicted | residual of :meth:`QCState.panels` side by side, titled, on top with
    their own colorbars (measured and predicted share one); the held-out section's own layer hidden."""
    z, size, shift = p["z"], p["size"], p["shift"]
    put_points(viewer, LAYER_MEASURED, p["data"], p["measured"], "viridis", p["contrast"], 0.0, size, z)
    put_points(viewer, LAYER_PREDICTED, p["data"], p["predicted"], "viridis", p["contrast"], shift, size, z)
    r = p["residual_max"]
    put_points(viewer, LAYER_RESIDUAL, p["data"], p["residual"], residual_colormap(), (-r, r), 2 * shift, size, z)
    put_titles(viewer, z, p["title_y"], p["title_x"], p["titles"], size)
    panels = [viewer.layers[n] for n in (LAYER_MEASURED, LAYER_PREDICTED, LAYER_RESIDUAL, LAYER_TITLES)]
    for lyr in panels:
        lyr.metadata["gene"] = p["gene"]
        result_on_top(viewer, lyr, above_points=True)
    show_own_colorbars(viewer, [panels[0], panels[2]])
    hide_own_layer(viewer, stack, p["index"])
    viewer.layers.selection.active = viewer.layers[LAYER_MEASURED]


def hide_own_layer(viewer, stack, index):
    """Hide the held-out section's own Points layer (the "QC measured" panel shows the same cells;
    underneath it, it only adds clutter); show the one hidden for a previous holdout."""
    for lyr in section_layers(viewer, stack):
        i = lyr.metadata.get(SECTION_KEY)
        if i == index and lyr.visible:
            lyr.visible = False
            lyr.metadata["inrst_qc_hidden"] = True
        elif i != index and lyr.metadata.pop("inrst_qc_hidden", False):
            lyr.visible = True


def show_uncertainty_volume(viewer, grid, data, inside, contrast):
    """The uncertainty volume (shown in 3D display only)."""
    layer, added = update_or_add_image(viewer, data, name=LAYER_UNCERTAINTY, scale=grid.scale,
                                       translate=grid.translate, contrast_limits=contrast, colormap="inferno",
                                       blending="additive", units="µm", axis_labels=ZYX, rendering="mip",
                                       metadata={"inrst_qc": "uncertainty"})
    if added:
        layer.colorbar.visible = True
    layer.metadata.update(grid=grid, inside=inside)
    layer.visible = viewer.dims.ndisplay == 3
    return layer


def show_uncertainty_plane(viewer, grid, img, contrast):
    """The uncertainty plane at ``grid.z`` (2D display only), above the field plane, under the points."""
    layer, added = update_or_add_image(viewer, img, name=LAYER_UNCERTAINTY_PLANE, scale=grid.scale,
                                       translate=grid.translate, contrast_limits=contrast, colormap="inferno",
                                       units="µm", axis_labels=ZYX[-len(grid.scale):], interpolation2d="linear",
                                       blending="translucent_no_depth",
                                       metadata={"inrst_qc": "uncertainty plane"})
    if added:
        result_on_top(viewer, layer)
        show_own_colorbars(viewer, [layer])
    layer.metadata.update(z_um=grid.z, grid=grid)
    layer.visible = viewer.dims.ndisplay == 2
    return layer


def show_for_display(viewer):
    """The uncertainty volume in 3D display, its plane in 2D."""
    three = viewer.dims.ndisplay == 3
    if LAYER_UNCERTAINTY in viewer.layers:
        viewer.layers[LAYER_UNCERTAINTY].visible = three
    if LAYER_UNCERTAINTY_PLANE in viewer.layers:
        viewer.layers[LAYER_UNCERTAINTY_PLANE].visible = not three


def show_domains(viewer, dom) -> str:
    """The domains as a Labels layer; returns the legend (rich text: each domain in its colour)."""
    if LAYER_DOMAINS in viewer.layers:
        layer = viewer.layers[LAYER_DOMAINS]
        layer.data = dom.labels
        layer.scale, layer.translate = dom.grid.scale, dom.grid.translate
    else:
        layer = viewer.add_labels(dom.labels, name=LAYER_DOMAINS, scale=dom.grid.scale, opacity=0.6,
                                  translate=dom.grid.translate, units="µm", axis_labels=ZYX,
                                  metadata={"inrst_qc": "domains"})
    labs = np.unique(dom.labels[dom.labels > 0])
    return f"{int(dom.labels.max())} domains: " + labels_legend_html(layer, labs)
