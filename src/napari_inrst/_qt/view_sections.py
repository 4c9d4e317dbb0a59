"""Measured sections in the "View field" widget: coloured by the gene the View shows (its first
gene, its colormap), and drawn with level of detail — large sections show every cell in view when
few enough are, else a stable subsample (:mod:`napari_inrst.render.sections`). Colours and
subsets are computed in a worker (latest request wins); each layer is then updated on the UI
thread in its own event-loop turn, so no single stall grows with the number of sections.

:class:`SectionsMixin` is mixed into :class:`~napari_inrst._qt.view.ViewWidget`.
"""

from __future__ import annotations

import contextlib

from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error

from ..viewer.layers import SECTION_KEY, STACK_KEY
from ..render.display import canvas_hw
from ..render.screenshot import viewer_camera
from ..render.sections import LOD_CAP, LOD_KEY, apply_section_update, gene_contrast_sampled, lod_rank, needs_lod, \
    section_update, view_rect
from .common import section_layers


class SectionsMixin:
    """Recolour/level-of-detail of the section Points layers (uses the View widget's state)."""

    def _init_sections(self, debounce_ms: int):
        """State, and a debounced re-pick of large sections' cells on camera / z / 2D-3D changes."""
        from qtpy.QtCore import QTimer

        self._sec_rid, self._sec_worker, self._sec_pending = 0, None, None
        self._sec_ranks, self._sec_stack, self._sec_rect = {}, None, None
        self._sec_timer = QTimer(self)
        self._sec_timer.setSingleShot(True)
        self._sec_timer.setInterval(debounce_ms)
        self._sec_timer.timeout.connect(lambda: self.refresh_sections(lod_only=True))
        cam = viewer_camera(self.viewer)
        for ev in (cam.events.zoom, cam.events.center, self.viewer.dims.events.point,
                   self.viewer.dims.events.ndisplay):
            ev.connect(self._sec_schedule)
            self._connections.append((ev, self._sec_schedule))

    def _sec_schedule(self, *_):
        self._sec_timer.start()

    def _sections_gene(self):
        """(gene, colormap, stack): the View's first gene and its colormap; without a field, the
        gene the sections already show (for level of detail only)."""
        layers = section_layers(self.viewer)
        stack = layers[0].metadata.get(STACK_KEY) if layers else None
        if stack is None:
            return None, None, None
        g = self.genes[0] if self.genes else None
        if g is not None and g in stack.genes:
            return g, self.colormaps.get(g, "magma"), stack
        g = layers[0].metadata.get("gene")
        return (g, "viridis", stack) if g in stack.genes else (None, None, stack)

    def refresh_sections(self, *_, lod_only: bool = False):
        """Colour the section layers by the View's gene; with ``lod_only`` only re-pick the cells
        of large sections for the current view (after a pan/zoom or a z move)."""
        if not self.sections_box.isChecked():
            return
        gene, cmap, stack = self._sections_gene()
        if gene is None:
            return
        layers = [lyr for lyr in section_layers(self.viewer, stack)
                  if not lod_only or needs_lod(stack[lyr.metadata[SECTION_KEY]], LOD_CAP)]
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
        if self._sec_stack is not stack:
            self._sec_ranks, self._sec_stack = {}, stack
        self._sec_rid += 1
        self._sec_rect = rect
        self._sec_pending = (self._sec_rid, stack, gene, cmap, rect,
                             [(lyr, lyr.metadata[SECTION_KEY]) for lyr in layers])
        if self._sec_worker is not None:
            self._sec_worker.quit()  # its finished signal starts the pending request
        else:
            self._start_sections()

    def _start_sections(self):
        req, self._sec_pending = self._sec_pending, None
        if req is None:
            return
        rid, stack, gene, cmap, rect, items = req
        ranks = self._sec_ranks

        @thread_worker
        def work():
            contrast = gene_contrast_sampled(stack, gene)
            g = stack.gene_index(gene)
            for layer, i in items:
                s = stack[i]
                rank = None
                if needs_lod(s, LOD_CAP):
                    rank = ranks.get(i)
                    if rank is None:
                        rank = ranks[i] = lod_rank(s.n_obs)
                yield rid, layer, gene, section_update(s, g, contrast, cmap, rect, LOD_CAP, rank)

        w = work()
        w.yielded.connect(self._on_sections_yield)
        w.finished.connect(self._on_sections_done)
        w.errored.connect(lambda exc: show_error(f"napari-inrst: colouring the sections failed: {exc}"))
        self._sec_worker = w
        w.start()

    def _on_sections_yield(self, item):
        rid, layer, gene, update = item
        if rid != self._sec_rid or layer not in self.viewer.layers:
            return  # stale or gone
        with contextlib.suppress(ValueError):
            apply_section_update(layer, gene, update, move=False)
        if LOD_KEY in layer.metadata:
            layer.metadata[LOD_KEY]["rect"] = self._sec_rect

    def _on_sections_done(self):
        self._sec_worker = None
        if self._sec_pending is not None:
            self._start_sections()

    @property
    def sections_busy(self) -> bool:
        return self._sec_worker is not None or self._sec_pending is not None or self._sec_timer.isActive()

    def _cancel_sections(self):
        self._sec_pending = None
        if self._sec_worker is not None:
            with contextlib.suppress(RuntimeError):
                self._sec_worker.quit()
