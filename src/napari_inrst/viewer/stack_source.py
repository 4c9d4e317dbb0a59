"""Which section stack the viewer holds, for every widget that works on it (no Qt).

The plugin's section layers carry their :class:`~napari_inrst.stack.SectionStack` in
``metadata[STACK_KEY]``; :class:`StackSource` follows the viewer's layer list and emits
``changed(stack or None)`` when the stack in the viewer changes (the opening of every widget's
``refresh``: find the stack, stop if it is the one already shown, else start over with it)."""

from __future__ import annotations

from psygnal import Signal

from .layers import SECTION_KEY, STACK_KEY


def find_stack(viewer):
    """The :class:`SectionStack` shared by the plugin's section layers (the last one added)."""
    for layer in reversed(list(viewer.layers)):
        st = layer.metadata.get(STACK_KEY) if hasattr(layer, "metadata") else None
        if st is not None:
            return st
    return None


def section_layers(viewer, stack=None):
    """Points layers of the sections of ``stack`` (all stacks if None), in section order."""
    out = []
    for layer in viewer.layers:
        md = getattr(layer, "metadata", {})
        if SECTION_KEY in md and (stack is None or md.get(STACK_KEY) is stack):
            out.append(layer)
    return sorted(out, key=lambda lyr: lyr.metadata[SECTION_KEY])


class StackSource:
    """The stack in ``viewer``, followed through layer insertions and removals.

    ``changed`` fires with the new stack (or None) when another stack (or none) is found; with
    ``track_layers`` also when the number of its section layers changes (the Sections widget's
    summary). :meth:`update` checks now (``force``: emit even when nothing changed)."""

    changed = Signal(object)

    def __init__(self, viewer, *, track_layers: bool = False, connect: bool = True):
        self.viewer = viewer
        self.stack = None
        self.track_layers = track_layers
        self._key = ()  # nothing seen yet: the first update always emits
        self._events = [viewer.layers.events.inserted, viewer.layers.events.removed] if connect else []
        for ev in self._events:
            ev.connect(self.update)

    def _key_of(self, stack):
        n = len(section_layers(self.viewer, stack)) if self.track_layers and stack is not None else 0
        return (id(stack), n)

    def update(self, *_, force: bool = False) -> bool:
        """Look for the stack; emit ``changed`` (and return True) if it differs from the last one."""
        stack = find_stack(self.viewer)
        key = self._key_of(stack)
        if key == self._key and stack is self.stack and not force:
            return False
        self.stack, self._key = stack, key
        self.changed.emit(stack)
        return True

    def disconnect(self):
        """Stop following the viewer (the widget is closing)."""
        for ev in self._events:
            ev.disconnect(self.update)
        self._events = []
