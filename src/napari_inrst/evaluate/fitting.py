"""The seams between the evaluation protocols and a field: :func:`inr_fit_fn` fits the real field
(``fit_fn(stack, sections)``), :class:`FieldPredictor` wraps any field (e.g. the synthetic truth)
as a predictor. Shared by the protocols (:mod:`.protocol`) and the section checks (:mod:`.checks`)."""

from __future__ import annotations

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
