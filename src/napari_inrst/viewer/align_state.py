"""The Align widget's view model (no Qt): the stack, the last alignment, the transforms before
manual corrections and the manual corrections with their undo history; psygnal events when the
sections move. Matrices come from :mod:`napari_inrst.align.overlay` / :mod:`napari_inrst.align.kabsch`::

    state = AlignState()
    state.set_stack(stack)
    state.apply_result(run_to_end(state.job(reference=3)))  # → result_changed, moved
    state.set_manual(0, (90.0, 0.0, 0.0, False))             # → moved(0)
    state.undo()                                            # → 0, moved(0)
"""

from __future__ import annotations

import numpy as np
from psygnal import Signal

from ..align.overlay import IDENTITY, ManualEdits, manual_transform, table_rows

#: consecutive manual changes of one section within this many seconds undo as one step
UNDO_MERGE_S = 1.0
METHODS = ("rigid", "similarity", "none")


class AlignState:
    """Alignment of one stack: ``result`` (the last :class:`~napari_inrst.align.AlignResult`),
    ``base`` (one 3×3 per section before manual corrections) and ``manual``
    (:class:`~napari_inrst.align.overlay.ManualEdits`). ``moved(index or -1 for all)`` fires
    whenever section transforms changed."""

    stack_changed = Signal(object)
    result_changed = Signal(object)
    moved = Signal(int)

    def __init__(self, undo_merge_s: float = UNDO_MERGE_S):
        self.stack = None
        self.result = None
        self.base = None
        self.manual = ManualEdits(undo_merge_s)

    def set_stack(self, stack):
        self.stack = stack
        self.result = None
        self.manual.clear()
        self.base = stack.transforms() if stack is not None else None
        self.stack_changed.emit(stack)

    def default_reference(self) -> int:
        return len(self.stack) // 2

    def job(self, reference: int, method: str = "rigid"):
        """The alignment as a generator function: yields ``(done, total, message)``, returns the
        result (validation happens at its first step)."""
        from ..align import iter_align_stack

        stack = self.stack

        def work():
            return (yield from iter_align_stack(stack, reference=int(reference), method=method))

        return work

    def apply_result(self, result):
        """Write ``result`` into the stack; manual corrections start again from it."""
        self.result = result
        result.apply(self.stack)
        self.base = self.stack.transforms()
        self.manual.clear()
        self.result_changed.emit(result)
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
        self.manual.set(i, tuple(edit), merge=merge, now=now)
        self._apply(i)

    def reset(self, i: int):
        """Section ``i`` back to its base (one undo step of its own)."""
        self.set_manual(i, IDENTITY, merge=False)

    def undo(self) -> int | None:
        """Undo the last manual correction; returns its section (None: nothing to undo)."""
        i = self.manual.undo()
        if i is not None:
            self._apply(i)
        return i

    @property
    def can_undo(self) -> bool:
        return self.manual.can_undo

    def _apply(self, i: int):
        s = self.stack[i]
        s.transform = manual_transform(self.base[i], s.xy_input, self.manual.get(i))
        self.moved.emit(int(i))
