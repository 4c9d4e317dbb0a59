"""The Sections widget's view model (no Qt): the stack's geometry and values set in place — z
(even spacing or one value per section, µm), the unit factor (coordinates as read × factor = µm)
and the normalization. A change that the stack refuses (:class:`~napari_inrst.errors.InputError`)
changes nothing and is reported through ``failed``; one that is applied through ``changed`` with
a sentence saying what was set."""

from __future__ import annotations

from psygnal import Signal


def parse_z(text: str) -> list[float]:
    """``"0, 12.5; 40 55"`` → ``[0.0, 12.5, 40.0, 55.0]`` (commas, semicolons or spaces)."""
    try:
        return [float(t) for t in text.replace(";", ",").replace(" ", ",").split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"not a list of numbers: '{text}'") from None


class SectionsState:
    """Geometry and values of the stack in the viewer. Events: ``stack_changed(stack)``,
    ``changed(message)`` after an applied change, ``failed(exception)`` for a refused one."""

    stack_changed = Signal(object)
    changed = Signal(str)
    failed = Signal(object)

    def __init__(self):
        self.stack = None

    def set_stack(self, stack):
        self.stack = stack
        self.stack_changed.emit(stack)

    def z_text(self) -> str:
        return ", ".join(f"{z:g}" for z in self.stack.z) if self.stack is not None else ""

    def _apply(self, change, message) -> bool:
        """Run ``change()`` on the stack; an InputError is reported and changes nothing, else
        ``changed(message())`` fires."""
        from ..errors import InputError

        if self.stack is None:
            return False
        try:
            change()
        except InputError as exc:
            self.failed.emit(exc)
            return False
        self.changed.emit(message())
        return True

    def apply_z(self, z) -> bool:
        """Set the z (µm) of every section."""
        return self._apply(lambda: self.stack.set_z(z), lambda: f"z set: {self.z_text()} µm")

    def apply_spacing(self, spacing: float) -> bool:
        """Sections ``spacing`` µm apart in their order, the first at z = 0."""
        if self.stack is None:
            return False
        return self.apply_z([k * float(spacing) for k in range(len(self.stack))])

    def apply_z_text(self, text: str) -> bool:
        """z typed as text (see :func:`parse_z`)."""
        try:
            z = parse_z(text)
        except ValueError as exc:
            self.failed.emit(exc)
            return False
        return self.apply_z(z)

    def apply_unit_factor(self, factor: float) -> bool:
        """Coordinates as read × ``factor`` = µm."""
        return self._apply(lambda: self.stack.set_unit_factor(factor), lambda: f"coordinates × {factor:g} → µm")

    def apply_normalize(self, normalize: str) -> bool:
        """Normalize the values another way (from the raw values read); False when unchanged."""
        from ..stack import renormalize

        if self.stack is None or normalize == self.stack.normalize:
            return False
        return self._apply(lambda: renormalize(self.stack, normalize, getattr(self.stack, "inputs", None)),
                           lambda: f"normalization: {normalize}")
