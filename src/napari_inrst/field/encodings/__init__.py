"""Coordinate encodings: every encoding is one file here, registered in :data:`REGISTRY` below.

An encoding (:class:`~.base.Encoding`) is a dataclass of settings that knows its output size,
the finest detail it represents (for the renderer), how it anneals coarse-to-fine, its JSON,
and how to make and run its tensors. Adding one: write ``myenc.py`` with a subclass of
``Encoding`` (see ``fourier.py``), import it here and add it to ``REGISTRY``. ``FieldConfig(encoding=
"myenc")``, the CLI's and the Train widget's encoding choice, model files and rendering then
use it. No torch at import.
"""

from __future__ import annotations

from ...errors import InputError
from .base import Encoding, Geometry
from .fourier import Fourier
from .hashgrid import HashGrid
from .rff import RandomFourier

#: name → encoding class; the first is the default
REGISTRY: dict[str, type[Encoding]] = {
    Fourier.name: Fourier,
    HashGrid.name: HashGrid,
    RandomFourier.name: RandomFourier,
}

__all__ = ["Encoding", "Geometry", "Fourier", "HashGrid", "RandomFourier", "REGISTRY", "names", "get", "from_dict"]


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get(name: str) -> type[Encoding]:
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise InputError(None, f"encoding must be one of {names()}, got {name!r}") from None


def from_dict(d) -> Encoding:
    """An encoding from its :meth:`~.base.Encoding.to_dict` (``{"name": ..., settings...}``)."""
    if isinstance(d, str):
        return get(d)()
    if not isinstance(d, dict):
        raise InputError(None, f"an encoding must be a JSON object with a 'name', got {type(d).__name__}")
    return get(d.get("name")).from_fields(d)
