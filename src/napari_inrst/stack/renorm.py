"""Another normalization for a stack already built (the Sections widget's "Normalization").

Two steps, so that a widget can run the slow one in a worker: :func:`renormalized_sections`
computes each section's new values from the raw values it keeps (reads the stack, changes
nothing; blocks of rows, so a worker lets go of the interpreter lock often), and
:func:`install_normalized` swaps them in (in place, instant). :func:`renormalize` does both.
No Qt and no torch here.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .normalize import TARGET_SUM, dense_rows
from .sections import NORMALIZE_CHOICES, SectionStack

#: the layer holding a section's raw values: counts (for log1p) or values as given (none)
RAW_KEYS = {"log1p": "counts", "none": "values"}


def _raw(section):
    layers = section.adata.layers
    return layers["counts"] if "counts" in layers else layers["values"]


def renormalized_sections(stack: SectionStack, normalize: str, inputs=None) -> list:
    """Each section's expression in normalization ``normalize`` (dense float32, the stack's genes),
    from the raw values the sections keep; the library sizes for log1p come from the raw inputs when
    given (:class:`~napari_inrst.io.readers.SectionInput`, one per section: every gene measured),
    else from the stack's genes. Raises :class:`~napari_inrst.errors.InputError` when the values do
    not allow it (log1p of negative values)."""
    if normalize not in NORMALIZE_CHOICES:
        raise InputError(None, f"normalize must be one of {NORMALIZE_CHOICES}, got '{normalize}'")
    use_inputs = inputs is not None and len(inputs) == len(stack)
    out = []
    for k, s in enumerate(stack.sections):
        raw = _raw(s)
        if normalize != "log1p":
            out.append(dense_rows(raw))
            continue
        vals = raw.data if hasattr(raw, "data") and hasattr(raw, "indptr") else np.asarray(raw)
        if vals.size and float(vals.min()) < 0:
            raise InputError(s.source or s.name, f"expression has negative values (min {float(vals.min()):g}) "
                             "but counts are expected for normalize='log1p'")
        X = inputs[k].adata.X if use_inputs else raw
        tot = np.asarray(X.sum(axis=1)).ravel().astype(np.float64)
        scale = np.divide(TARGET_SUM, tot, out=np.zeros_like(tot), where=tot > 0)
        out.append(dense_rows(raw, scale))
    return out


def install_normalized(stack: SectionStack, normalize: str, values) -> SectionStack:
    """Put :func:`renormalized_sections`' values into ``stack`` (in place) and record ``normalize``."""
    if len(values) != len(stack):
        raise ValueError(f"{len(values)} sections for a stack of {len(stack)}")
    for s, X in zip(stack.sections, values):
        layers, key = s.adata.layers, RAW_KEYS[normalize]
        if key not in layers:
            layers[key] = _raw(s)
            del layers[RAW_KEYS["none" if normalize == "log1p" else "log1p"]]
        s.adata.X = X
    stack.normalize = normalize
    stack.__dict__.pop("_inrst_default_gene", None)  # a statistic of the old values
    return stack


def renormalize(stack: SectionStack, normalize: str, inputs=None) -> SectionStack:
    """Switch ``stack`` (in place) to another normalization (see :func:`renormalized_sections`)."""
    if normalize == stack.normalize:
        return stack
    return install_normalized(stack, normalize, renormalized_sections(stack, normalize, inputs))
