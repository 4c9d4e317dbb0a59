"""What the Align widget shows, without Qt: the overlay of all sections (one colour per section;
the positions *before* the run in a greyed tone of the same colour, so before ≠ after), its
legend, the manual correction matrix (:func:`~napari_inrst.align.kabsch.rigid_matrix`), the table
(angles from :func:`~napari_inrst.align.kabsch.rigid_params`) and an undo history of manual corrections."""

from __future__ import annotations

import html

import numpy as np

#: one distinct colour per section (cycled)
PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
           "#fabed4", "#469990", "#dcbeff", "#9a6324", "#fffac8", "#800000", "#aaffc3", "#808000"]
#: "before" colours: the section's colour mixed this much with mid-grey (and drawn fainter)
BEFORE_GREY = 0.6


def rgba(hex_color: str) -> np.ndarray:
    h = hex_color.lstrip("#")
    return np.array([int(h[k:k + 2], 16) / 255 for k in (0, 2, 4)] + [1.0])


def section_color(i: int, *, before: bool = False) -> np.ndarray:
    """RGBA of section ``i`` in the overlay (``before``: its greyed tone)."""
    c = rgba(PALETTE[i % len(PALETTE)])
    if before:
        c[:3] = (1 - BEFORE_GREY) * c[:3] + BEFORE_GREY * 0.5
    return c


#: most cells of one section drawn in the overlay (a stable subsample beyond: large sections)
OVERLAY_CAP = 20_000


def overlay_points(xys, *, before: bool = False, cap: int = OVERLAY_CAP) -> tuple[np.ndarray, np.ndarray]:
    """(n, 2) (y, x) points of all sections and their (n, 4) colours, one colour per section;
    at most ``cap`` cells per section (a fixed random subsample of larger ones)."""
    def sub(xy):
        if len(xy) <= cap:
            return xy
        return xy[np.sort(np.random.default_rng(0).choice(len(xy), cap, replace=False))]

    xys = [sub(np.asarray(xy)) for xy in xys]
    data = np.concatenate([np.column_stack([xy[:, 1], xy[:, 0]]) for xy in xys])
    colors = np.concatenate([np.tile(section_color(i, before=before), (len(xy), 1)) for i, xy in enumerate(xys)])
    return data, colors


def _hex(c) -> str:
    return "#" + "".join(f"{int(round(255 * v)):02x}" for v in c[:3])


def legend_html(names, *, before_shown: bool = False) -> str:
    """Rich text for a QLabel: a colour swatch per section name (after alignment) and, when the
    before overlay is shown, the note on its greyed colours."""
    items = [f"<span style='color:{_hex(section_color(i))}'>&#9632;</span>&nbsp;{html.escape(str(n))}"
             for i, n in enumerate(names)]
    text = "Overlay colours: " + " &nbsp; ".join(items)
    if before_shown:
        ex = _hex(section_color(0, before=True))
        text += (f"<br>Before alignment: the same sections in greyed tones "
                 f"(<span style='color:{ex}'>&#9632;</span> = {html.escape(str(names[0]))}), fainter.")
    return text


def correction(angle_deg: float, dx: float, dy: float, flip: bool, center) -> np.ndarray:
    """3×3: optional flip in x and rotation, both about ``center``, then a shift (stack frame)."""
    from .kabsch import rigid_matrix

    return rigid_matrix(angle_deg, (dx, dy), mirror=flip, center=center)


def manual_transform(base, xy_input, edit) -> np.ndarray:
    """A section's transform after the manual correction ``edit = (angle, dx, dy, flip)`` on top of
    ``base`` (its transform before manual corrections): flip and rotation about the centroid of its
    cells as ``base`` places them, then the shift."""
    from ..stack import apply_transform

    center = apply_transform(base, xy_input).mean(axis=0)
    return correction(*edit, center=center) @ base


def table_rows(stack, result=None) -> list[list[str]]:
    """Per section: name, rotation angle (°), "yes" when mirrored, residual to the next section (µm)."""
    from .kabsch import rigid_params

    rows = []
    for i, s in enumerate(stack):
        p = rigid_params(s.transform)
        res = "" if result is None or i >= len(result.residual_um) else f"{result.residual_um[i]:.1f}"
        rows.append([s.name, f"{p['angle_deg']:.1f}", "yes" if p["mirrored"] else "", res])
    return rows


IDENTITY = (0.0, 0.0, 0.0, False)


class ManualEdits:
    """Manual corrections per section ``(angle, dx, dy, flip)`` with an undo history.

    ``set(i, value)`` records the previous value of section ``i``; ``undo()`` restores the most
    recent one and returns the section index (None when there is nothing to undo). Consecutive
    changes of one section within ``merge_s`` seconds (a spin box being scrolled) are one step."""

    def __init__(self, merge_s: float = 0.0):
        self.values: dict[int, tuple] = {}
        self.history: list[tuple[int, tuple]] = []
        self.merge_s = float(merge_s)
        self._last = (None, -np.inf)

    def get(self, i: int) -> tuple:
        return self.values.get(i, IDENTITY)

    def set(self, i: int, value: tuple, *, now: float | None = None, merge: bool = True):
        import time

        now = time.monotonic() if now is None else now
        last_i, last_t = self._last
        if not (merge and last_i == i and now - last_t <= self.merge_s and self.history):
            self.history.append((i, self.get(i)))
        self._last = (i, now)
        if tuple(value) == IDENTITY:
            self.values.pop(i, None)
        else:
            self.values[i] = tuple(value)

    def undo(self) -> int | None:
        if not self.history:
            return None
        i, prev = self.history.pop()
        self._last = (None, -np.inf)
        if prev == IDENTITY:
            self.values.pop(i, None)
        else:
            self.values[i] = prev
        return i

    def break_merge(self):
        """The next :meth:`set` starts a step of its own (something else happened in between)."""
        self._last = (None, -np.inf)

    def clear(self):
        self.values.clear()
        self.history.clear()
        self._last = (None, -np.inf)

    @property
    def can_undo(self) -> bool:
        return bool(self.history)
