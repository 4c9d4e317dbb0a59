"""Widget "View field" (:class:`ViewWidget`, see :mod:`.widget`) and its child widgets."""

from .widget import ViewWidget

__all__ = ["ViewWidget"]
