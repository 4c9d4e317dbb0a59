"""Map points from a section's own input frame into the stack frame of a model (no torch, no Qt).

What a model knows about where its sections lie is in its stack metadata (``FieldModel.stack_meta``):
per section, in input order, a name, a z (µm) and a 3×3 transform from the section's input
coordinates (µm, i.e. after ``unit_factor``) into the stack frame — the rigid alignment with the
field-driven refinement already composed into it (:mod:`napari_inrst.field.refine`) — and, when
the model has one (``stack_meta["deformation"]``, :mod:`napari_inrst.align.deform`), a smooth
per-section displacement in the section's input frame applied before that transform. The input
coordinates of a section file are multiplied by the stack's ``unit_factor`` first, as when the
stack was built.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..stack import apply_transform
from .deform import deformations_from_meta


def section_index(stack_meta: dict, section, source=None) -> int:
    """The 0-based input index of ``section``: an index (int, or a string of digits) or a name."""
    names = [str(n) for n in stack_meta.get("names", [])]
    n = len(names)
    key = str(section).strip()
    if key.lstrip("-").isdigit() and key not in names:
        k = int(key)
        if not 0 <= k < n:
            raise InputError(source, f"section {k} is out of range: the model has {n} sections "
                                     f"(0..{n - 1}: {', '.join(names)})")
        return k
    if key in names:
        if key.isdigit() and int(key) < n and names[int(key)] != key:
            raise InputError(source, f"section '{key}' is ambiguous: a section is named '{key}' and "
                                     f"section {key} is '{names[int(key)]}'")
        return names.index(key)
    raise InputError(source, f"no section '{key}' in the model; sections: {', '.join(names) or 'none'} "
                             f"(or a 0-based index 0..{n - 1})")


def map_points(stack_meta: dict, section, xy, source=None) -> np.ndarray:
    """(n, 2) points in ``section``'s input frame (coordinates as in its file) → (n, 3) x, y, z in
    the stack frame (µm): unit factor, deformation (if stored, and enabled), transform, z."""
    return place_points(stack_meta, section_index(stack_meta, section, source), xy, source=source)


def place_points(stack_meta: dict, k: int, xy, deformations=None, source=None) -> np.ndarray:
    """:func:`map_points` of section ``k`` (0-based input index). ``deformations``: the model's,
    as :func:`~.deform.deformations_from_meta` reads them (read here when None)."""
    mats = stack_meta.get("transforms") or []
    z = stack_meta.get("z") or []
    if k >= len(mats) or k >= len(z):
        raise InputError(source, f"the model stores no transform or z for section {k}")
    M = np.asarray(mats[k], dtype=np.float64)
    if M.shape != (3, 3) or not np.isfinite(M).all():
        raise InputError(source, f"the model's transform of section {k} is not a finite 3×3 matrix")
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2) * float(stack_meta.get("unit_factor", 1.0) or 1.0)
    defs = deformations_from_meta(stack_meta, source) if deformations is None else deformations
    if k < len(defs) and defs[k] is not None:
        xy = defs[k].apply(xy)
    out = np.empty((len(xy), 3), dtype=np.float64)
    out[:, :2] = apply_transform(M, xy)
    out[:, 2] = float(z[k])
    return out
