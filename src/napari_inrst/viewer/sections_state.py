"""The Sections widget's view model (no Qt): the stack's geometry and values set in place — z
(even spacing or one value per section, µm), the unit factor (coordinates as read × factor = µm)
and the normalization. A change that the stack refuses (:class:`~napari_inrst.errors.InputError`)
changes nothing and is reported through ``failed``; one that is applied through ``changed`` with
a sentence saying what was set. The slow parts (new values, the layers' colours and positions)
are computed by generator/worker functions here (:func:`section_updates_job`, ``apply_normalize``'s
``run``) so that the widget runs them off the UI thread."""

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

    def apply_normalize(self, normalize: str, run=None) -> bool:
        """Normalize the values another way (from the raw values read); False when unchanged.

        ``run(work, done, fail)`` (optional, the widget's worker) runs ``work()`` — the new values,
        computed without touching the stack: tens of seconds for 10⁶ cells — off the UI thread and
        hands its result to ``done`` (which swaps them into the stack and fires ``changed``) or its
        exception to ``fail``. Without ``run`` it all happens now."""
        from ..errors import InputError
        from ..stack import install_normalized, renormalized_sections

        if self.stack is None or normalize == self.stack.normalize:
            return False
        stack, inputs = self.stack, getattr(self.stack, "inputs", None)

        def work():
            return renormalized_sections(stack, normalize, inputs)

        def done(adatas):
            if self.stack is stack:  # not another stack meanwhile
                install_normalized(stack, normalize, adatas)
                self.changed.emit(f"normalization: {normalize}")

        if run is not None:
            run(work, done, self.failed.emit)
            return True
        try:
            adatas = work()
        except InputError as exc:
            self.failed.emit(exc)
            return False
        done(adatas)
        return True


def section_updates_job(stack, gene: str, colormap: str, items, *, move: bool = False,
                        size_factor: float = 1.0):
    """What the section layers ``items`` = [(layer, section index, cells shown or None), …] show
    coloured by ``gene`` (a worker's generator; layers are passed through, never touched): yields
    ``(layer, gene, colormap, update, move, size)`` per layer, ``update`` for
    :func:`~napari_inrst.render.sections.apply_section_update`. A large section keeps the cells it
    shows (its level-of-detail subset: the same number of points, updated in place); with ``move``
    their positions (z, y, x) and spot size (µm × ``size_factor``) are recomputed too, else
    ``size`` is None. Shared contrast over a sample of cells, colours computed once per layer."""
    from ..render.sections import (gene_contrast_sampled, gene_values, needs_lod, point_rgba, points_zyx,
                                   section_update)

    contrast = gene_contrast_sampled(stack, gene)
    g = stack.gene_index(gene)
    for layer, i, idx in items:
        s = stack[i]
        if idx is not None and needs_lod(s) and len(idx) and int(idx[-1]) < s.n_obs:
            values = gene_values(s, g)[idx]
            update = (idx, points_zyx(s, idx) if move else None, values, point_rgba(values, contrast, colormap))
        else:
            update = section_update(s, g, contrast, colormap)
        size = s.spot_diameter_um() * float(size_factor) if move else None
        yield layer, gene, colormap, update, move, size
