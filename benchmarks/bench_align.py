"""Alignment quality and speed (issue 3).

* synthetic sample (rotations ≤ ±30°, shifts ≤ 25 % of the width, one mirrored section): mean
  displacement error against the analytic truth as % of the section width (target < 2 %),
  mirror found; baseline: no alignment (identity), same run.
* MERFISH hypothalamus (aligned as published) with random known rigid motions (±30°, shifts
  ≤ 25 % of the width) applied to 4 of 5 sections: mean cell displacement error (target < 10 µm);
  baseline: no alignment.
* breast ST (truly unaligned; array coords × 200 µm): median matched-spot distance of adjacent
  pairs and run time, against no alignment; PASTE side by side when ``paste-bio`` is importable.
  PASTE is not a project dependency. paste-bio 1.4.0 declares no requirements but imports POT,
  scikit-learn, seaborn and matplotlib, and fails with POT ≥ 0.9.5 (``line_search`` signature);
  it does not need torch. To include it without touching the venv:
  ``pip install --target /tmp/paste_env paste-bio pot==0.9.4 scikit-learn seaborn`` (then delete
  numpy/scipy/pandas from that folder so the venv's are used) and run with
  ``PYTHONPATH=/tmp/paste_env``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BREAST_UNIT = 200.0


def _displacement(stack, matrices, truth) -> np.ndarray:
    """Mean |M_est x − M_true x| per section (µm)."""
    from napari_inrst.stack import apply_transform

    return np.array([np.linalg.norm(apply_transform(m, s.xy_input) - apply_transform(t, s.xy_input), axis=1).mean()
                     for s, m, t in zip(stack.sections, matrices, truth)])


def synthetic(figs: dict):
    from napari_inrst.align import align_stack
    from napari_inrst.sample import sample_stack

    stack, tissue = sample_stack()
    truth = [np.asarray(s.adata.uns["truth_matrix"]) for s in stack]
    ref = len(stack) // 2
    assert np.allclose(truth[ref], np.eye(3)), "the sample's unmoved section is not len//2"
    width = float(np.ptp(np.concatenate([s.xy for s in stack.select([ref]).sections])[:, 0]))
    t0 = time.perf_counter()
    res = align_stack(stack, reference=ref)
    figs["synthetic.seconds"] = round(time.perf_counter() - t0, 2)
    err = _displacement(stack, res.matrices, truth)
    base = _displacement(stack, [np.eye(3)] * len(stack), truth)
    figs["synthetic.section_width_um"] = round(width, 1)
    figs["synthetic.mean_error_pct_width"] = round(100 * err.mean() / width, 3)
    figs["synthetic.max_error_pct_width"] = round(100 * err.max() / width, 3)
    figs["synthetic.baseline_identity_mean_error_pct_width"] = round(100 * base.mean() / width, 2)
    figs["synthetic.ratio_error_vs_identity"] = round(err.mean() / base.mean(), 4)
    figs["synthetic.target_pct_width"] = 2.0
    figs["synthetic.meets_target"] = "yes" if 100 * err.mean() / width < 2.0 else "NO"
    truth_mirror = [bool(s.adata.uns["mirrored"]) for s in stack]
    figs["synthetic.mirror_found"] = "yes" if res.mirrored == truth_mirror else f"NO ({res.mirrored})"
    figs["synthetic.median_residual_um"] = round(float(np.median(res.residual_um)), 2)


def _merfish_stack():
    from napari_inrst.io.readers import read_h5ad
    from napari_inrst.stack import build_stack

    files = sorted((SHARED / "merfish_hypothalamus").glob("section_*.h5ad"))
    ads = [read_h5ad(f, counts_expected=False) for f in files]
    z = [1000 * float(np.asarray(a.obs["slice_id"])[0]) for a in ads]
    return ads, z, [f.stem for f in files]


def merfish(figs: dict, seed: int = 0, max_angle: float = 30.0):
    from napari_inrst.align import align_stack
    from napari_inrst.sample import rigid_matrix
    from napari_inrst.stack import build_stack

    ads, z, names = _merfish_stack()
    rng = np.random.default_rng(seed)
    ref = len(ads) // 2
    truth, moved = [], []
    for i, a in enumerate(ads):
        xy = np.asarray(a.obsm["spatial"], dtype=np.float64)
        width = float(np.ptp(xy[:, 0]))
        if i == ref:
            M = np.eye(3)
        else:
            M = rigid_matrix(rng.uniform(-max_angle, max_angle), rng.uniform(-0.25, 0.25, 2) * width,
                             center=xy.mean(0))
        Minv = np.linalg.inv(M)
        b = a.copy()
        b.obsm["spatial"] = xy @ Minv[:2, :2].T + Minv[:2, 2]
        truth.append(M)  # moved coords → published (aligned) frame
        moved.append(b)
    stack = build_stack(moved, z, names=names, normalize="none")
    t0 = time.perf_counter()
    res = align_stack(stack, reference=ref)
    figs["merfish.seconds"] = round(time.perf_counter() - t0, 2)
    figs["merfish.cells"] = int(sum(s.n_obs for s in stack))
    err = _displacement(stack, res.matrices, truth)
    base = _displacement(stack, [np.eye(3)] * len(stack), truth)
    figs["merfish.mean_displacement_error_um"] = round(float(err.mean()), 2)
    figs["merfish.per_section_error_um"] = " ".join(f"{e:.1f}" for e in err)
    figs["merfish.baseline_identity_error_um"] = round(float(base.mean()), 1)
    figs["merfish.ratio_error_vs_identity"] = round(float(err.mean() / base.mean()), 4)
    figs["merfish.target_um"] = 10.0
    figs["merfish.meets_target"] = "yes" if err.mean() < 10 else "NO"
    figs["merfish.mirrors_reported"] = int(sum(res.mirrored))
    # The published frame is not an anatomical truth: every section's centroid is at (0, 0), and a
    # rigid fit of the 8 region centroids of adjacent sections departs from it by 20–80 µm. So we
    # also measure recovery of the known motions: aligning the moved sections must reproduce the
    # alignment of the unmoved ones (same reference, same frame).
    orig = build_stack(ads, z, names=names, normalize="none")
    res0 = align_stack(orig, reference=ref)
    rec = _displacement(stack, res.matrices, [m0 @ t for m0, t in zip(res0.matrices, truth)])
    figs["merfish.recovery_error_um"] = round(float(rec.mean()), 2)
    figs["merfish.recovery_per_section_um"] = " ".join(f"{e:.1f}" for e in rec)
    figs["merfish.recovery_meets_10um"] = "yes" if rec.mean() < 10 else "NO"
    from napari_inrst.align import kabsch
    from napari_inrst.stack import apply_transform

    reg = []
    for i in range(len(ads) - 1):
        ra, rb = (np.asarray(ads[k].obs["Region"]).astype(str) for k in (i, i + 1))
        xa, xb = (np.asarray(ads[k].obsm["spatial"], dtype=float) for k in (i, i + 1))
        regs = sorted(set(ra) & set(rb))
        ca = np.array([xa[ra == r].mean(0) for r in regs])
        cb = np.array([xb[rb == r].mean(0) for r in regs])
        w = np.array([min((ra == r).sum(), (rb == r).sum()) for r in regs])
        reg.append(np.linalg.norm(apply_transform(kabsch(ca, cb, weights=w), xa) - xa, axis=1).mean())
    figs["merfish.published_frame_vs_region_centroid_fit_um"] = round(float(np.mean(reg)), 1)


def _breast_stack():
    from napari_inrst.io.readers import read_h5ad
    from napari_inrst.stack import build_stack

    files = sorted((SHARED / "breast_st").glob("section*.h5ad"))
    ads = [read_h5ad(f) for f in files]
    return build_stack(ads, [0.0, 1.0, 2.0, 3.0], names=[f.stem for f in files], unit_factor=BREAST_UNIT)


def _pair_median_distance(stack, matrices) -> list[float]:
    """Median distance of matched spots (nearest expression-aware partner) of adjacent sections."""
    from napari_inrst.align.matching import pair_features
    from napari_inrst.align.pairwise import matched_distances, spacing
    from napari_inrst.stack import apply_transform

    out = []
    for i in range(len(stack) - 1):
        a, b = stack[i], stack[i + 1]
        Fa, Fb, _ = pair_features(a.xy_input, a.X, b.xy_input, b.X)
        ya, yb = apply_transform(matrices[i], a.xy_input), apply_transform(matrices[i + 1], b.xy_input)
        out.append(float(np.median(matched_distances(ya, yb, Fa, Fb, max(spacing(ya), spacing(yb))))))
    return out


def breast(figs: dict):
    from napari_inrst.align import align_stack

    stack = _breast_stack()
    t0 = time.perf_counter()
    res = align_stack(stack)
    figs["breast.seconds"] = round(time.perf_counter() - t0, 2)
    d = _pair_median_distance(stack, res.matrices)
    d0 = _pair_median_distance(stack, [np.eye(3)] * len(stack))
    figs["breast.median_matched_distance_um"] = round(float(np.mean(d)), 1)
    figs["breast.per_pair_um"] = " ".join(f"{v:.0f}" for v in d)
    figs["breast.baseline_identity_median_matched_distance_um"] = round(float(np.mean(d0)), 1)
    figs["breast.ratio_vs_identity"] = round(float(np.mean(d) / np.mean(d0)), 3)
    figs["breast.mirrors_reported"] = int(sum(res.mirrored))
    try:
        import paste  # noqa: F401
    except ImportError:
        figs["breast.paste"] = ("skipped: paste-bio not importable (optional; needs paste-bio, POT 0.9.4, "
                                "scikit-learn, seaborn, matplotlib on PYTHONPATH)")
        return
    p = _paste(stack)
    figs.update(p)
    figs["breast.ratio_distance_vs_paste"] = round(figs["breast.median_matched_distance_um"]
                                                   / p["breast.paste.median_matched_distance_um"], 3)
    figs["breast.ratio_seconds_vs_paste"] = round(figs["breast.seconds"] / p["breast.paste.seconds"], 3)


def _paste(stack) -> dict:  # pragma: no cover - optional dependency
    import anndata as ad
    import paste as pst

    t0 = time.perf_counter()
    slices = []
    for s in stack:
        a = ad.AnnData(X=s.adata.layers["counts"].copy(), obs=s.adata.obs.copy(), var=s.adata.var.copy())
        a.obsm["spatial"] = s.xy_input
        slices.append(a)
    pis = [pst.pairwise_align(slices[i], slices[i + 1]) for i in range(len(slices) - 1)]
    new = pst.stack_slices_pairwise(slices, pis)
    secs = time.perf_counter() - t0
    from napari_inrst.align import kabsch

    mats = [kabsch(s.xy_input, np.asarray(n.obsm["spatial"])) for s, n in zip(stack, new)]
    d = _pair_median_distance(stack, mats)
    return {"breast.paste.seconds": round(secs, 2), "breast.paste.median_matched_distance_um": round(float(np.mean(d)), 1)}


def run(quick: bool = True) -> dict:
    figs: dict = {}  # same figures quick or not: the whole module takes ~1 min on 2 cores
    synthetic(figs)
    if (SHARED / "merfish_hypothalamus").exists():
        merfish(figs)
    else:
        figs["merfish"] = f"skipped: shared data not found at {SHARED}"
    if (SHARED / "breast_st").exists():
        breast(figs)
    else:
        figs["breast"] = f"skipped: shared data not found at {SHARED}"
    return {k: (float(v) if isinstance(v, np.floating) else v) for k, v in figs.items()}


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run("--full" not in sys.argv), indent=1))
