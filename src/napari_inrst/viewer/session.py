"""The viewer's current field, handed from the widget that made it to the widgets that show it.

No Qt: a psygnal signal per viewer. The Train widget calls :func:`publish_field` when a fit
ends (finished, cancelled or resumed); the View widget listens to :attr:`FieldSession.changed`
and shows the new field at once (it does not wait for a layer to be added or removed)::

    from .session import field_session
    field_session(viewer).changed.connect(lambda field: ...)

It also carries ``stack_changed`` for in-place changes of the stack (the Sections widget's z,
unit factor and normalization), which no layer event announces.
"""

from __future__ import annotations

import weakref

from psygnal import Signal


class FieldSession:
    """The current field of one viewer; ``changed`` fires with the new field (or None).
    ``stack_changed`` fires with the stack when its sections moved or its values changed in
    place (z, unit factor, normalization set in the Sections widget)."""

    changed = Signal(object)
    stack_changed = Signal(object)

    def __init__(self):
        self.field = None
        self.source = ""

    def publish(self, field, source: str = ""):
        """Make ``field`` the viewer's current field and tell every listener."""
        self.field = field
        self.source = source
        self.changed.emit(field)


_SESSIONS: dict[int, tuple] = {}


def field_session(viewer) -> FieldSession:
    """The :class:`FieldSession` of ``viewer`` (created on first use, dropped with the viewer)."""
    key = id(viewer)
    entry = _SESSIONS.get(key)
    if entry is not None and entry[0]() is viewer:
        return entry[1]
    sess = FieldSession()
    try:
        ref = weakref.ref(viewer, lambda _r, k=key: _SESSIONS.pop(k, None))
    except TypeError:  # not weak-referenceable: keep it for the process
        ref = (lambda v=viewer: v)
    _SESSIONS[key] = (ref, sess)
    return sess


def publish_field(viewer, field, source: str = ""):
    """Hand ``field`` to every widget of ``viewer`` that shows fields."""
    field_session(viewer).publish(field, source)


def current_field(viewer):
    """The field last published for ``viewer``, or None."""
    entry = _SESSIONS.get(id(viewer))
    return entry[1].field if entry is not None and entry[0]() is viewer else None


#: metadata key of a layer that carries a field (the Train widget's preview)
FIELD_KEY = "inrst_field"


def find_field(viewer):
    """The viewer's current field: the one last handed over (:func:`publish_field`), else the most
    recently added one in a layer's metadata (``layer.metadata[FIELD_KEY]``), or None."""
    f = current_field(viewer)
    if f is not None:
        return f
    for layer in reversed(list(viewer.layers)):
        f = getattr(layer, "metadata", {}).get(FIELD_KEY)
        if f is not None:
            return f
    return None


def stack_changed(viewer, stack):
    """Tell the widgets of ``viewer`` that ``stack`` changed in place (geometry or values)."""
    field_session(viewer).stack_changed.emit(stack)
