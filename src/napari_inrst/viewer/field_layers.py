"""The View widget's field layers in a napari viewer, without Qt: one Image layer per gene for the
2D plane (``"<gene> · field"``) and one for the 3D volume (``"<gene> · field 3D"``), kept in step
with a :class:`~napari_inrst.viewer.view_state.ViewState` (colormaps, contrast, colorbars,
plane or volume). Layers are updated in place (napari keeps the view), new ones go to the bottom
of the layer list, the bottom field layer is translucent and the others add on top.
"""

from __future__ import annotations

import contextlib

import numpy as np

from ..render.display import RENDER_KEY, canvas_hw, hide_superseded, update_or_add_image
from ..render.screenshot import viewer_camera, viewer_overlay
from .view_state import FIRST_COLORMAP, GenesChange

SUFFIX = {"plane": "field", "volume": "field 3D"}
#: axis names of the layers (napari labels its dims with them: z / y / x, not -3 / -2 / -1)
AXES = {"plane": ("y", "x"), "volume": ("z", "y", "x")}


def frame_bounds(viewer, bounds, margin: float = 0.05) -> None:
    """Centre the 2D camera on the x/y of ``bounds`` ((lo, hi) of x, y, z in µm) and zoom so they
    fill the canvas but for ``margin`` on each side."""
    lo, hi = (np.asarray(b, dtype=float) for b in bounds)
    h, w = canvas_hw(viewer)
    cam = viewer_camera(viewer)
    size = np.maximum(hi[:2] - lo[:2], 1e-6)
    center = list(cam.center)
    center[-2:] = [(lo[1] + hi[1]) / 2, (lo[0] + hi[0]) / 2]
    cam.center = tuple(center)
    cam.zoom = (1 - 2 * margin) * min(h / size[1], w / size[0])


def layers_frame(layers):
    """``(xmin, xmax, ymin, ymax, step)`` in µm: the x/y extent (world) of ``layers`` and their
    finest x/y scale, None without layers. A field plane kept inside it (see
    :func:`~napari_inrst.render.grids.plane_for_view`) leaves napari's dims range as it is: a
    range change makes napari's dims sliders move the dims point, and every layer is re-sliced
    (0.1–0.9 s with five large section layers)."""
    ext = [(np.asarray(lyr.extent.world, dtype=float)[:, -2:], np.asarray(lyr.extent.step, dtype=float)[-2:])
           for lyr in layers if getattr(lyr, "ndim", 0) >= 2]
    if not ext:
        return None
    lo = np.min([e[0][0] for e in ext], axis=0)
    hi = np.max([e[0][1] for e in ext], axis=0)
    step = float(np.min([e[1] for e in ext]))
    if not (np.all(np.isfinite(lo)) and np.all(hi > lo) and step > 0):
        return None
    return (float(lo[1]), float(hi[1]), float(lo[0]), float(hi[0]), step)


class FieldLayers:
    """Plane and volume layers (``plane`` / ``volume``: gene → layer) of ``state`` in ``viewer``."""

    def __init__(self, viewer, state):
        self.viewer = viewer
        self.state = state
        self.plane: dict = {}
        self.volume: dict = {}
        self.volume_masks: dict = {}  # volume grid key → inside-tissue mask (NaN outside on save)
        self._stepped_back: set = set()  # (field id, ndisplay) whose first view hid the previews

    def _all(self):
        return [*self.plane.values(), *self.volume.values()]

    def clear(self) -> None:
        """Remove every field layer (a new field is shown)."""
        layers = self._all()
        self.plane.clear()
        self.volume.clear()
        self.volume_masks.clear()
        for lyr in layers:
            with contextlib.suppress(ValueError, KeyError):
                self.viewer.layers.remove(lyr)

    def prune(self) -> None:
        """Forget layers the user removed from the viewer."""
        for d in (self.plane, self.volume):
            for g, lyr in list(d.items()):
                if lyr not in self.viewer.layers:
                    d.pop(g)

    def frame(self):
        """:func:`layers_frame` of the viewer's layers other than these field layers (None if none)."""
        own = {id(lyr) for lyr in self._all()}
        return layers_frame([lyr for lyr in self.viewer.layers
                             if id(lyr) not in own and RENDER_KEY not in getattr(lyr, "metadata", {})])

    def shown(self) -> list:
        """The layers of the genes shown, for the current display (2D: planes, 3D: volumes)."""
        d = self.volume if self.state.ndisplay == 3 else self.plane
        return [d[g] for g in self.state.genes if g in d]

    # --- following the state ------------------------------------------------------------------
    def apply_genes(self, change: GenesChange) -> None:
        """A replaced gene takes over the old one's layers (no layer removed or inserted: napari
        keeps the view); a removed gene's layers go."""
        for old, new in change.replaced:
            for d, kind in ((self.plane, "plane"), (self.volume, "volume")):
                lyr = d.pop(old, None)
                if lyr is not None:
                    lyr.metadata.update(gene=new, grid_key=None)
                    lyr.name = f"{new} · {SUFFIX[kind]}"
                    lyr.colormap = self.state.colormaps[new]
                    if new in self.state.contrast:  # else set when the worker's contrast arrives
                        lyr.contrast_limits = self.state.contrast[new]
                    d[new] = lyr
        for gene in change.removed:
            for d in (self.plane, self.volume):
                lyr = d.pop(gene, None)
                if lyr is not None:
                    with contextlib.suppress(ValueError, KeyError):
                        self.viewer.layers.remove(lyr)

    def set_colormap(self, gene, cmap) -> None:
        for d in (self.plane, self.volume):
            if gene in d:
                d[gene].colormap = cmap

    def apply_contrast(self) -> None:
        """Every layer at its gene's contrast limits (after Auto contrast)."""
        for d in (self.plane, self.volume):
            for g, lyr in d.items():
                if g in self.state.contrast:
                    lyr.contrast_limits = self.state.contrast[g]

    def apply_colorbars(self) -> None:
        """Colorbars of the field layers on or off (``state.colorbars``); the scale bar (µm) with them."""
        on = self.state.colorbars
        for lyr in self._all():
            cb = getattr(lyr, "colorbar", None)
            if cb is not None:
                cb.visible = on
        if on and self.shown():
            viewer_overlay(self.viewer, "scale_bar").visible = True

    def set_ndisplay(self, ndisplay: int) -> None:
        three = ndisplay == 3
        for lyr in self.plane.values():
            lyr.visible = not three
        for lyr in self.volume.values():
            lyr.visible = three

    def set_rendering(self, mode: str) -> None:
        for lyr in self.volume.values():
            lyr.rendering = mode

    # --- results ------------------------------------------------------------------------------
    def _add(self, kind, gene, data, grid, **kw):
        self.state.ensure_contrast([gene])
        lyr = self.viewer.add_image(
            data, name=f"{gene} · {SUFFIX[kind]}", scale=grid.scale, translate=grid.translate,
            colormap=self.state.colormaps.get(gene, FIRST_COLORMAP), contrast_limits=self.state.contrast[gene],
            blending="additive", units="µm", axis_labels=AXES[kind], metadata={RENDER_KEY: kind, "gene": gene}, **kw)
        i = list(self.viewer.layers).index(lyr)
        if i != 0:
            self.viewer.layers.move(i, 0)
        return lyr

    def _step_back_once(self, ndisplay, keep):
        key = (id(self.state.field), ndisplay)
        if key not in self._stepped_back:  # once per field and view: finished previews/overlays step back
            self._stepped_back.add(key)
            hide_superseded(self.viewer, keep=keep)

    def show_plane(self, grid, genes, vals, *, fine: bool) -> bool:
        """Put the plane values (k, ny, nx) of ``genes`` on ``grid`` into the plane layers (2D only;
        False in 3D, nothing shown)."""
        if self.viewer.dims.ndisplay != 2:
            return False
        for j, gene in enumerate(genes):
            lyr = self.plane.get(gene)
            if lyr is None or lyr not in self.viewer.layers:
                lyr = self.plane[gene] = self._add("plane", gene, vals[j], grid, interpolation2d="linear")
            else:
                update_or_add_image(self.viewer, vals[j], layer=lyr, scale=grid.scale, translate=grid.translate,
                                    contrast_limits=self.state.contrast.get(gene))
            if not lyr.visible:
                lyr.visible = True
            lyr.metadata.update(z_um=grid.z, grid=grid, fine=fine)
        self._fix_blending(self.plane)
        if fine:
            self._step_back_once(2, self.plane.values())
        self.apply_colorbars()
        return True

    def _fix_blending(self, layers: dict):
        """Bottom field layer translucent (NaN stays transparent), the others add on top."""
        order = sorted(layers.values(), key=lambda lyr: list(self.viewer.layers).index(lyr))
        for k, lyr in enumerate(order):
            want = "translucent_no_depth" if k == 0 else "additive"
            if str(lyr.blending) != want:  # the setter always redraws
                lyr.blending = want

    def volume_todo(self, key) -> list:
        """Genes shown whose volume is missing or not of ``key`` (grid, sampling); the others are
        made visible."""
        todo = [g for g in self.state.genes if g not in self.volume or self.volume[g].metadata.get("grid_key") != key]
        for g in self.state.genes:
            if g in self.volume and g not in todo:
                self.volume[g].visible = True
        return todo

    def show_volume(self, grid, genes, vals, key) -> None:
        """Put volume values (k, nz, ny, nx; NaN outside tissue) into the volume layers: NaN is
        filled below the contrast range (ray casting has no NaN) and the mask kept for saving."""
        mask = np.isfinite(vals[0])
        self.volume_masks = {grid.key(): mask}
        for j, gene in enumerate(genes):
            self.state.ensure_contrast([gene])
            lo = self.state.contrast[gene][0]
            v = vals[j]
            fill = min(lo, float(np.nanmin(v))) if mask.any() else lo
            data = np.where(mask, v, np.float32(fill)).astype(np.float32)
            lyr = self.volume.get(gene)
            if lyr is None or lyr not in self.viewer.layers:
                lyr = self.volume[gene] = self._add("volume", gene, data, grid, rendering=self.state.rendering)
            else:
                lyr.scale = grid.scale
                lyr.translate = grid.translate
                lyr.data = data
            lyr.metadata.update(grid_key=key, grid=grid)
            lyr.visible = self.viewer.dims.ndisplay == 3
        self._step_back_once(3, self.volume.values())
        self.apply_colorbars()

    def volume_values(self):
        """(values (k, nz, ny, nx) with NaN outside tissue, grid, genes) of the volumes shown on
        one grid; RuntimeError when there is none yet."""
        layers = [self.volume[g] for g in self.state.genes if g in self.volume]
        if not layers:
            raise RuntimeError("no volume yet: press 'Show 3D volume' first")
        grid = layers[0].metadata["grid"]
        layers = [lyr for lyr in layers if lyr.metadata.get("grid") == grid]
        vols = np.stack([np.asarray(lyr.data, dtype=np.float32) for lyr in layers])
        mask = self.volume_masks.get(grid.key())
        if mask is not None:
            vols[:, ~mask] = np.nan
        return vols, grid, [lyr.metadata["gene"] for lyr in layers]
