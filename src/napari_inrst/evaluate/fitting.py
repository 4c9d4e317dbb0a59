"""The seams between the evaluation protocols and a field: :func:`inr_fit_fn` fits the real field
(``fit_fn(stack, sections)``), :class:`FieldPredictor` wraps any field (e.g. the synthetic truth)
as a predictor; :func:`fit_predict` is the one "fit without some sections, predict them" step.
Shared by the protocols (:mod:`.protocol`) and the section checks (:mod:`.checks`)."""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np


def inr_fit_fn(config=None, **fit_kwargs) -> Callable:
    """The seam for the real field: ``fit_fn(stack, sections)`` → ``napari_inrst.field.fit_field``."""

    def fit(stack, sections):
        from ..field import fit_field

        return fit_field(stack, config, sections=list(sections), **fit_kwargs)

    return fit


class FieldPredictor:
    """Wrap an :class:`~napari_inrst.field.api.ExpressionField` (e.g. ``TruthField``) as a predictor
    whose columns follow ``genes`` (the stack's gene order)."""

    def __init__(self, field, genes: Sequence[str]):
        self.field = field
        self.idx = [list(field.genes).index(g) for g in genes]

    def predict(self, xyz) -> np.ndarray:
        return self.field.decode(self.field.latent(np.asarray(xyz, dtype=np.float64)), self.idx)

    def latent(self, xyz) -> np.ndarray:
        return self.field.latent(xyz)

    def occupancy(self, xyz) -> np.ndarray:
        return self.field.occupancy(xyz)

    def bounds(self):
        return self.field.bounds()


def fit_timed(fit_fn, stack, kept):
    t0 = time.perf_counter()
    model = fit_fn(stack, list(kept))
    return model, time.perf_counter() - t0


def kept_sections(stack, holdout: Sequence[int]) -> list[int]:
    """The sections a fit without ``holdout`` trains on: every other section not marked excluded."""
    out = set(int(h) for h in holdout)
    return [i for i in range(len(stack)) if i not in out and not stack[i].excluded]


def fit_predict(stack, fit_fn: Callable, kept: Sequence[int], holdout: Sequence[int]):
    """One fit on ``kept``, then each held-out section predicted at its cells (all genes):
    ``(model, [pred (cells × genes) per held-out section], fit_seconds)``. The fit → predict of
    :func:`~.protocol.leave_out` (``evaluate --holdout``), :func:`~.checks.section_consistency`
    (``qc``) and the QC widget's hold-out (:func:`~.protocol.hold_out`)."""
    model, fit_s = fit_timed(fit_fn, stack, kept)
    preds = [np.asarray(model.predict(stack[h].xyz), dtype=np.float64) for h in holdout]
    return model, preds, fit_s
