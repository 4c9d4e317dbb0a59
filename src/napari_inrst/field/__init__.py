"""The expression field: f(x, y, z) → expression of every modeled gene (+ tissue occupancy).

``api.ExpressionField`` is the small interface the render, QC and evaluation layers use; the
trained INR (``field.model.FieldModel``) and the analytic truth of the synthetic sample
(``field.api.TruthField``) both implement it. torch is imported only when a model is built,
trained or loaded.
"""

from .api import ExpressionField, TruthField
from .config import FieldConfig
from .encodings import Fourier, HashGrid

__all__ = ["ExpressionField", "TruthField", "FieldConfig", "Fourier", "HashGrid", "FieldModel", "load_model",
           "fit_field", "iter_fit"]


def __getattr__(name):  # lazy: keep torch out of `import napari_inrst.field`
    if name in ("FieldModel", "load_model"):
        from . import model

        return getattr(model, name)
    if name in ("fit_field", "iter_fit"):
        from . import fit

        return getattr(fit, name)
    raise AttributeError(name)
