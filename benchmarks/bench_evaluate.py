"""Validate the evaluation metrics: the baselines on MERFISH must reproduce EVALUATION.md's table.

Middle MERFISH section (Bregma 0.14) held out, log1p of the values as given, all 155 genes:
knn3d 0.152 / 0.288 / 0.450 and adjacent 0.161 / 0.295 / 0.456 (Pearson per cell / 50 µm bins /
100 µm bins). Also the intra-section ``knn2d`` baseline on breast ST section 1 (50 % spots
removed, seed 0, 200 most expressed genes), and – without ``quick`` – the INR on the same
MERFISH split (default field config), with its ratio to the best baseline.
"""

from __future__ import annotations

import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REFERENCE = {
    "knn3d": (0.152, 0.288, 0.450),
    "adjacent": (0.161, 0.295, 0.456),
}
FIGS = ("pearson", "pearson_50um", "pearson_100um")


def _merfish():
    import numpy as np

    from napari_inrst.evaluate import log1p_values
    from napari_inrst.io.readers import read_h5ad
    from napari_inrst.stack import build_stack

    files = sorted((SHARED / "merfish_hypothalamus").glob("section_*.h5ad"))
    ads = [read_h5ad(f) for f in files]
    z = [1000 * float(np.asarray(a.obs["slice_id"])[0]) for a in ads]
    return log1p_values(build_stack(ads, z, names=[f.stem for f in files], normalize="none"))


def run(quick: bool = True) -> dict:
    from napari_inrst.evaluate import intra_section, leave_out

    figs: dict = {}
    if not (SHARED / "merfish_hypothalamus").exists():
        return {"skipped": f"shared data not found at {SHARED}"}
    stack = _merfish()
    t0 = time.perf_counter()
    res = leave_out(stack, None, [2], labels_key="Region", ssim=True)
    figs["merfish_baselines_seconds"] = round(time.perf_counter() - t0, 2)
    max_dev = 0.0
    for m, ref in REFERENCE.items():
        for f, r in zip(FIGS, ref):
            v = res["methods"][m][f]
            figs[f"merfish_mid.{m}.{f}"] = round(v, 4)
            figs[f"merfish_mid.{m}.{f}.reference"] = r
            max_dev = max(max_dev, abs(round(v, 3) - r))
        for f in ("rmse", "ssim", "ari"):
            figs[f"merfish_mid.{m}.{f}"] = round(res["methods"][m][f], 4)
    figs["merfish_mid.max_abs_deviation_from_reference"] = round(max_dev, 4)
    figs["merfish_mid.reproduces_reference"] = "yes" if max_dev < 0.0015 else "NO"
    figs["merfish_mid.ari_classifier_on_measured_cells"] = round(res["ari_measured"], 4)

    breast = SHARED / "breast_st"
    if breast.exists():
        from napari_inrst.io.readers import read_h5ad
        from napari_inrst.stack import build_stack

        a = read_h5ad(breast / "section1.h5ad", counts_expected=True, unit_factor=200.0)
        bst = build_stack([a], [0.0], names=["section1"], normalize="log1p")
        r = intra_section(bst, 0, None)
        for f in ("pearson", "rmse", "ssim"):
            figs[f"breast_s1_intra.knn2d.{f}"] = round(r["methods"]["knn2d"][f], 4)
        figs["breast_s1_intra.genes"] = r["gene_selection"]

    if not quick:
        from napari_inrst.evaluate import inr_fit_fn

        res = leave_out(stack, inr_fit_fn(), [2], labels_key="Region", baselines=("knn3d", "adjacent"))
        best = max(res["methods"]["knn3d"]["pearson_50um"], res["methods"]["adjacent"]["pearson_50um"])
        inr = res["methods"]["inr"]
        for f in FIGS + ("rmse", "ssim", "ari", "ari_domains", "fit_seconds"):
            if f in inr:
                figs[f"merfish_mid.inr.{f}"] = round(inr[f], 4)
        figs["merfish_mid.inr_minus_best_baseline.pearson_50um"] = round(inr["pearson_50um"] - best, 4)
        figs["merfish_mid.inr_over_best_baseline.pearson_50um"] = round(inr["pearson_50um"] / best, 4)
        figs["hardware"] = res["hardware"]
    return figs


if __name__ == "__main__":  # pragma: no cover
    import json
    import sys

    print(json.dumps(run(quick="--full" not in sys.argv), indent=2))
