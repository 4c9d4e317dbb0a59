"""Measured sections in the "View field" widget: where the field shown puts them (its transforms,
with the refinement, and its per-section deformations, when it was trained on these sections),
coloured by the gene the View shows (its first gene, its colormap), and drawn with level of detail — large sections show every cell in view when
few enough are, else a stable subsample (:mod:`napari_inrst.render.sections`). Colours and
subsets are computed in a worker (latest request wins, :class:`~.._qt.workers.LatestRequest`);
each layer is then updated on the UI thread in its own event-loop turn, so no single stall grows
with the number of sections.
"""

from __future__ import annotations

import contextlib

from qtpy.QtCore import QObject, QTimer

from ...render.display import canvas_hw
from ...render.screenshot import viewer_camera
from ...render.sections import LOD_KEY, apply_section_update, needs_lod, view_rect
from ...viewer.layers import SECTION_KEY, STACK_KEY
from ...viewer.view_jobs import sections_job
from ..common import Connections, section_layers
from ..workers import LatestRequest


class SectionsOverlay(QObject):
    """Recolouring and level of detail of the section Points layers for a
    :class:`~napari_inrst.viewer.view_state.ViewState` (its first gene and colormap, its
    ``show_sections``); re-picks large sections' cells after camera, z and 2D/3D changes (debounced)."""

    def __init__(self, viewer, state, debounce_ms: int, parent=None):
        super().__init__(parent)
        self.viewer = viewer
        self.state = state
        self._ranks, self._stack = {}, None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(debounce_ms)
        self._timer.timeout.connect(lambda: self.refresh(lod_only=True))
        self.worker = LatestRequest(sections_job, on_yield=self._apply, what="colouring the sections")
        cam = viewer_camera(viewer)
        self._connections = Connections((ev, self._schedule) for ev in (
            cam.events.zoom, cam.events.center, viewer.dims.events.point, viewer.dims.events.ndisplay))

    def _schedule(self, *_):
        self._timer.start()

    def _gene(self):
        """(gene, colormap, stack): the View's first gene and its colormap; without a field, the
        gene the sections already show (for level of detail only)."""
        layers = section_layers(self.viewer)
        stack = layers[0].metadata.get(STACK_KEY) if layers else None
        if stack is None:
            return None, None, None
        g = self.state.genes[0] if self.state.genes else None
        if g is not None and g in stack.genes:
            return g, self.state.colormaps.get(g, "magma"), stack
        g = layers[0].metadata.get("gene")
        return (g, "viridis", stack) if g in stack.genes else (None, None, stack)

    def set_visible(self, on: bool) -> None:
        """The "Show measured sections" checkbox: the section layers on or off (then recoloured)."""
        for lyr in section_layers(self.viewer):
            lyr.visible = bool(on)
        self.refresh()

    def refresh(self, *_, lod_only: bool = False) -> None:
        """Colour the section layers by the View's gene; with ``lod_only`` only re-pick the cells
        of large sections for the current view (after a pan/zoom or a z move)."""
        if not self.state.show_sections:
            return
        gene, cmap, stack = self._gene()
        if gene is None:
            return
        layers = [lyr for lyr in section_layers(self.viewer, stack)
                  if not lod_only or needs_lod(stack[lyr.metadata[SECTION_KEY]])]
        if lod_only:  # only sections whose cells for this view are not on screen yet
            layers = [lyr for lyr in layers if lyr.visible and lyr.metadata.get("gene") == gene]
        if not layers:
            return
        rect = None
        if self.viewer.dims.ndisplay == 2:
            cam = viewer_camera(self.viewer)
            rect = view_rect(tuple(cam.center)[-2:], cam.zoom, canvas_hw(self.viewer))
        if lod_only:
            layers = [lyr for lyr in layers if lyr.metadata.get(LOD_KEY, {}).get("rect") != rect]
            if not layers:
                return
        if self._stack is not stack:
            self._ranks, self._stack = {}, stack
        meta = getattr(self.state.field, "stack_meta", None)  # where the field puts the sections
        self.worker.submit(stack, gene, cmap, rect, [(lyr, lyr.metadata[SECTION_KEY]) for lyr in layers],
                           self._ranks, meta)

    def _apply(self, item):
        layer, gene, update, rect, moved = item
        if layer not in self.viewer.layers:
            return  # gone meanwhile
        with contextlib.suppress(ValueError):
            apply_section_update(layer, gene, update, move=moved)
        if LOD_KEY in layer.metadata:
            layer.metadata[LOD_KEY]["rect"] = rect

    @property
    def busy(self) -> bool:
        return self.worker.busy or self._timer.isActive()

    def cancel(self) -> None:
        self.worker.cancel()

    def cleanup(self) -> None:
        self._timer.stop()
        self.worker.cancel()
        self._connections.clear()
