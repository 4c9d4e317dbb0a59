"""The Align widget's view model (no Qt): the stack, the last alignment, the transforms before
manual corrections and the manual corrections with their undo history; psygnal events when the
sections move. Matrices come from :mod:`napari_inrst.align.overlay` / :mod:`napari_inrst.align.kabsch`::

    state = AlignState()
    state.set_stack(stack)
    state.apply_result(run_to_end(state.job(reference=3)))  # → result_changed, moved
    state.set_manual(0, (90.0, 0.0, 0.0, False))             # → moved(0)
    state.undo()                                            # → 0, moved(0)

Non-rigid (``method="nonrigid"``, :func:`napari_inrst.align.nonrigid.iter_align_nonrigid`): the
result's per-section :class:`~napari_inrst.align.deform.Deformation` is kept in ``fitted`` and
written onto the stack's sections (``section.deformation``: what ``section.xy``, the Train
widget's fit and the model file's ``stack_meta['deformation']`` use). :meth:`set_deformation_on`
switches one off (the section's ``deformation`` becomes None: nothing of it is kept or trained on)
or on again; it is a step of the same undo history as the manual corrections. A rigid run clears
the deformations (they were fitted against the alignment it replaces).
"""

from __future__ import annotations

import numpy as np
from psygnal import Signal

from ..align.overlay import IDENTITY, ManualEdits, manual_transform, table_rows

#: consecutive manual changes of one section within this many seconds undo as one step
UNDO_MERGE_S = 1.0
METHODS = ("rigid", "similarity", "nonrigid", "none")
#: what the method box shows for each method
METHOD_LABELS = {"rigid": "rigid", "similarity": "similarity", "nonrigid": "Non-rigid (deform)", "none": "none"}


class AlignState:
    """Alignment of one stack: ``result`` (the last :class:`~napari_inrst.align.AlignResult`),
    ``base`` (one 3×3 per section before manual corrections) and ``manual``
    (:class:`~napari_inrst.align.overlay.ManualEdits`). ``moved(index or -1 for all)`` fires
    whenever section transforms (or deformations) changed; ``deform_changed(index or -1)`` when
    a deformation was switched on or off or a new set arrived."""

    stack_changed = Signal(object)
    result_changed = Signal(object)
    moved = Signal(int)
    deform_changed = Signal(int)

    def __init__(self, undo_merge_s: float = UNDO_MERGE_S):
        self.stack = None
        self.result = None
        self.base = None
        self.manual = ManualEdits(undo_merge_s)
        self.fitted: list = []  # per section the last fitted Deformation (kept when switched off) or None
        self._undo: list = []  # "manual" (a step of self.manual) or ("deform", i, was_on)

    def set_stack(self, stack):
        from ..align.deform import get_deformations

        self.stack = stack
        self.result = None
        self.manual.clear()
        self._undo.clear()
        self.base = stack.transforms() if stack is not None else None
        self.fitted = list(get_deformations(stack)) if stack is not None else []
        self.stack_changed.emit(stack)

    def default_reference(self) -> int:
        return len(self.stack) // 2

    def job(self, reference: int, method: str = "rigid", should_stop=None):
        """The alignment as a generator function: yields ``(done, total, message)``, returns the
        result (validation happens at its first step). ``should_stop``: polled by the non-rigid fit."""
        from ..align import iter_align_stack

        stack = self.stack

        def work():
            if method == "nonrigid":
                from ..align.nonrigid import iter_align_nonrigid

                return (yield from iter_align_nonrigid(stack, reference=int(reference), should_stop=should_stop))
            return (yield from iter_align_stack(stack, reference=int(reference), method=method))

        return work

    def apply_result(self, result):
        """Write ``result`` into the stack (with its deformations; a result without any clears
        them); manual corrections start again from it."""
        from ..align.deform import set_deformations

        self.result = result
        result.apply(self.stack)
        defs = getattr(result, "deformations", None)
        self.fitted = list(defs) if defs is not None else [None] * len(self.stack)
        set_deformations(self.stack, self.fitted)
        self.base = self.stack.transforms()
        self.manual.clear()
        self._undo.clear()
        self.result_changed.emit(result)
        self.deform_changed.emit(-1)
        self.moved.emit(-1)

    def result_message(self) -> str:
        r = self.result
        mirrored = [n for n, m in zip(self.stack.names, r.mirrored) if m]
        med = float(np.median(r.residual_um)) if r.residual_um else float("nan")
        return (f"aligned onto {self.stack.names[r.reference]} ({r.method}); median residual {med:.1f} µm"
                + (f"; mirrored: {', '.join(mirrored)}" if mirrored else ""))

    def table(self) -> list[list[str]]:
        return table_rows(self.stack, self.result)

    # --- manual correction ---------------------------------------------------------------------
    def edit(self, i: int) -> tuple:
        """Section ``i``'s manual correction ``(angle °, dx µm, dy µm, flip)``."""
        return self.manual.get(i)

    def set_manual(self, i: int, edit, *, merge: bool = True, now: float | None = None):
        """Correct section ``i`` by hand: ``edit = (angle, dx, dy, flip)`` on top of its base."""
        steps = len(self.manual.history)
        self.manual.set(i, tuple(edit), merge=merge, now=now)
        if len(self.manual.history) > steps:
            self._undo.append("manual")
        self._apply(i)

    def reset(self, i: int):
        """Section ``i`` back to its base (one undo step of its own)."""
        self.set_manual(i, IDENTITY, merge=False)

    def undo(self) -> int | None:
        """Undo the last step (a manual correction, or a deformation switched on/off); returns its
        section (None: nothing to undo)."""
        if not self._undo:
            return None
        step = self._undo.pop()
        if step == "manual":
            i = self.manual.undo()
            if i is not None:
                self._apply(i)
            return i
        _, i, was_on = step
        self._set_deform(i, was_on)
        return i

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    # --- deformations ---------------------------------------------------------------------------
    def deformation(self, i: int):
        """Section ``i``'s deformation as kept (what the stack holds), or None."""
        return getattr(self.stack[i], "deformation", None)

    def has_deformation(self, i: int) -> bool:
        """Section ``i`` has a fitted deformation (kept or switched off)."""
        return 0 <= i < len(self.fitted) and self.fitted[i] is not None

    def deformation_on(self, i: int) -> bool:
        return self.deformation(i) is not None

    def set_deformation_on(self, i: int, on: bool) -> bool:
        """Keep section ``i``'s fitted deformation (``on``) or drop it from the stack (one undo
        step); False when nothing changed (no fitted deformation, or already so)."""
        if not self.has_deformation(i) or self.deformation_on(i) == bool(on):
            return False
        self._undo.append(("deform", int(i), self.deformation_on(i)))
        self.manual.break_merge()  # a later manual change is a step of its own
        self._set_deform(i, bool(on))
        return True

    def _set_deform(self, i: int, on: bool):
        self.stack[i].deformation = self.fitted[i] if on else None
        self.deform_changed.emit(int(i))
        self.moved.emit(int(i))

    def _apply(self, i: int):
        s = self.stack[i]
        s.transform = manual_transform(self.base[i], s.xy_input, self.manual.get(i))
        self.moved.emit(int(i))
