"""The :class:`Encoding` interface every coordinate encoding implements (no torch at import).

An encoding is a dataclass: its fields are its settings (JSON round-trip through
:meth:`Encoding.to_dict` / :func:`~napari_inrst.field.encodings.from_dict`). Fields whose
``metadata`` has ``resolved=True`` are not settings but values computed from the data by
:meth:`Encoding.resolve` (the box the network sees, the finest cell …); a resolved encoding
describes its tensors completely and is stored with the model.

The torch side is three methods that act on the network's encoding layer (an ``nn.Module``
built by :mod:`napari_inrst.field.networks`): :meth:`init` registers the buffers/parameters,
:meth:`forward` maps (n, 3) points (µm, the network's frame) to (n, :meth:`out_dim`) features,
:meth:`anneal` hears how far the coarse-to-fine schedule has come. torch is imported inside
them, so the settings (and the GUI that edits them) stay light.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

from ...errors import InputError


def resolved(default=None):
    """A dataclass field computed by :meth:`Encoding.resolve` (not a user setting)."""
    return dataclasses.field(default=default, metadata={"resolved": True})


@dataclass(frozen=True)
class Geometry:
    """What an encoding may know about the data: the box of the training points in the network's
    frame (µm, centred; one section: a slab one spot spacing thick), the spot spacing and the
    section spacing (None for one section)."""

    lo: tuple
    hi: tuple
    spacing: float
    z_spacing: float | None

    @property
    def extent(self) -> tuple:
        return tuple(h - lo for lo, h in zip(self.lo, self.hi))

    def finest_z_um(self, z_spacings: float) -> float:
        """``z_spacings`` × the section spacing; the spot spacing for one section."""
        return z_spacings * self.z_spacing if self.z_spacing else self.spacing


@dataclass
class Encoding:
    """Base class of the encodings (see the module docstring for the contract)."""

    name: ClassVar[str] = ""

    # --- settings and resolution (torch-free) ---------------------------------------------
    def resolve(self, geometry: Geometry) -> "Encoding":
        """A copy with every data-dependent value filled in (settings left None chosen from the
        data, and the ``resolved`` fields)."""
        raise NotImplementedError

    def settings(self) -> "Encoding":
        """A copy without the ``resolved`` fields (what a fit recipe stores)."""
        return dataclasses.replace(self, **{f.name: f.default for f in dataclasses.fields(self)
                                            if f.metadata.get("resolved")})

    def is_resolved(self) -> bool:
        return all(getattr(self, f.name) is not None for f in dataclasses.fields(self) if f.metadata.get("resolved"))

    def out_dim(self) -> int:
        """Features per point (needs a resolved encoding)."""
        raise NotImplementedError

    def detail_um(self) -> tuple[float, float]:
        """(x/y, z) finest length in µm the encoding represents (the renderer samples at it);
        ``math.inf`` along an axis it does not resolve."""
        raise NotImplementedError

    def validate(self):
        """Raise :class:`~napari_inrst.errors.InputError` for settings out of range."""
        return self

    def check_resolved(self, bad):
        """Check the resolved fields of an encoding read from a file; ``bad(what)`` raises."""
        for f in dataclasses.fields(self):
            if f.metadata.get("resolved"):
                v = getattr(self, f.name)
                if v is None:
                    bad(f"'{f.name}' is missing")
                if isinstance(v, tuple) and not all(_finite(x) for x in v):
                    bad(f"'{f.name}' must hold finite numbers")

    # --- torch side -----------------------------------------------------------------------
    def init(self, module, seed: int):
        """Register the encoding's buffers and parameters on ``module`` (an ``nn.Module``)."""
        raise NotImplementedError

    def forward(self, module, xyz):
        """(n, 3) float tensor → (n, out_dim) features."""
        raise NotImplementedError

    def anneal(self, module, progress: float):
        """Coarse-to-fine hook: ``progress`` in [0, 1] of the annealing schedule (1: fully open)."""

    # --- JSON -----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {"name": self.name}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            d[f.name] = list(v) if isinstance(v, tuple) else v
        return d

    @classmethod
    def from_fields(cls, d: dict) -> "Encoding":
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(d) - set(names) - {"name"}
        if unknown:
            raise InputError(None, f"unknown {cls.name} encoding keys: {', '.join(sorted(unknown))}")
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k != "name"}
        return cls(**kw)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_positive_int(owner: str, name: str, v, lo: int = 1, hi: int = 1 << 20):
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise InputError(None, f"{owner} {name} must be a whole number in {lo}…{hi}, got {v!r}")


def check_positive_um(owner: str, name: str, v):
    if v is not None and not (_finite(v) and v > 0):
        raise InputError(None, f"{owner} {name} must be a positive length in µm (or null: from the data), got {v!r}")
