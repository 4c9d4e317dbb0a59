"""Evaluation: the held-out protocols and the section checks (no Qt); the metrics and baselines they use
(:mod:`napari_inrst.measure`) are re-exported here.

See ``docs/EVALUATION.md`` for the definitions these modules implement.
"""

from ..measure.baselines import BASELINES, Adjacent, KNN2D, KNN3D, adjacent, knn2d, knn3d
from ..measure.metrics import (LabelClassifier, adjusted_rand_score, binned_pearson, pearson_per_gene, rmse,
                               ssim_per_gene, top_expressed_genes)
from .fitting import FieldPredictor, inr_fit_fn
from .protocol import (
    format_table,
    intra_section,
    missing_spots,
    leave_one_section_out,
    leave_out,
    log1p_values,
)

__all__ = [
    "BASELINES", "Adjacent", "KNN2D", "KNN3D", "adjacent", "knn2d", "knn3d",
    "LabelClassifier", "adjusted_rand_score", "binned_pearson", "pearson_per_gene", "rmse",
    "ssim_per_gene", "top_expressed_genes",
    "FieldPredictor", "format_table", "inr_fit_fn", "intra_section", "missing_spots", "leave_one_section_out",
    "leave_out", "log1p_values",
]
