"""Field-driven rigid refinement (issue 14): alignment error of ``map`` and the held-out field score,
before and after refinement, in one run.

    python benchmarks/run.py --only refine [--quick]      (or: python benchmarks/bench_refine.py [--full])

* synthetic sample (8 sections, 300 genes; rotations ≤ ±30°, shifts ≤ 25 % of the width, one
  mirrored): the expression-matched rigid alignment (``align_stack``), then
  :func:`napari_inrst.field.refine.refine_stack` with its defaults. Error: mean displacement of
  every spot, as ``napari-inrst map`` places it (``align.mapping.map_points`` over the stored
  transforms), from its analytic true position (µm; the reference section counts as 0).
* the same sample with a poor rigid start instead: the true transforms moved by known small
  random motions (±4°, ±40 µm; spots 50 µm apart), to show what the refinement recovers.
* MERFISH hypothalamus (5 sections, 155 genes; quick: sections 09–24), moved by known random
  rigid motions as in ``bench_align.py`` (±30°, shifts ≤ 25 % of the width; odd seeds mirror one
  section). The published coordinates only centre each section on its centroid (not a
  registration), so two truths are reported: ``error_vs_published_um`` (map's output against the
  published coordinates) and ``known_motion_error_um`` (against the rigid alignment of the unmoved
  sections carried through the known motions, bench_align's figure), plus the fraction of cells whose
  nearest cell in the adjacent section carries the same ``Region`` label (labels the refinement never
  sees; higher is better).
* held-out field score, each case: the refinement's own decision figure — each half of the
  interleaved sections predicted by a short field trained on the other half, at the sections' cells
  (RMSE per gene ÷ the gene's spread, lower is better; mean per-gene Pearson), for the rigid start
  (``before``) and the kept transforms (``after``; equal to ``before`` when the refinement was reverted).
* ``seconds``: the refinement's wall time (CPU here), next to the rigid alignment's.
"""

from __future__ import annotations

import time

import numpy as np

from _common import main, plain, with_shared

MERFISH_SEEDS = (1,)
MERFISH_QUICK = {"seeds": (1,), "sections": ("section_09", "section_14", "section_19", "section_24")}


def _map_error(stack, meta_transforms, truth) -> np.ndarray:
    """Per section: mean |map(section, its input xy) − true position| (µm)."""
    from napari_inrst.align.mapping import map_points

    meta = {"names": list(stack.names), "z": list(stack.z), "unit_factor": 1.0,
            "transforms": [np.asarray(m).tolist() for m in meta_transforms]}
    out = []
    for k, (s, t) in enumerate(zip(stack.sections, truth)):
        xyz = map_points(meta, k, s.xy_input / float(getattr(stack, "unit_factor", 1.0)))
        true = s.xy_input @ np.asarray(t)[:2, :2].T + np.asarray(t)[:2, 2]
        out.append(float(np.linalg.norm(xyz[:, :2] - true, axis=1).mean()))
    return np.array(out)


def _score_figs(figs, tag, res):
    if not res.scores:
        figs[f"{tag}.refinement_kept"] = "skipped (no section between two sections of the other half)"
        return
    before, after = res.scores[0], res.scores[res.round_kept]
    figs[f"{tag}.heldout_rmse_before"] = round(before["rmse"], 4)
    figs[f"{tag}.heldout_rmse_after"] = round(after["rmse"], 4)
    figs[f"{tag}.heldout_pearson_before"] = round(before["pearson"], 4)
    figs[f"{tag}.heldout_pearson_after"] = round(after["pearson"], 4)
    figs[f"{tag}.refinement_kept"] = f"yes (round {res.round_kept})" if res.kept else "no (reverted)"
    figs[f"{tag}.refine_seconds"] = round(res.seconds, 1)


def _best_refined(res):
    """Index of the refined round with the best held-out score (kept or not), or None."""
    if len(res.scores) < 2:
        return None
    return 1 + int(np.argmin([s["rmse"] for s in res.scores[1:]]))


def synthetic(figs: dict, perturb: bool = False, **refine_kw):
    from napari_inrst.align import align_stack
    from napari_inrst.field.refine import refine_stack
    from napari_inrst.synthetic.sample import sample_stack

    stack, tissue = sample_stack()
    truth = [np.asarray(s.adata.uns["truth_matrix"]) for s in stack]
    ref = len(stack) // 2
    t0 = time.perf_counter()
    tag = "synthetic_perturbed" if perturb else "synthetic"
    if perturb:  # a poor rigid start: the truth moved by known small motions (±4°, ±40 µm)
        from napari_inrst.synthetic.sample import rigid_matrix

        rng = np.random.default_rng(1)
        stack.set_transforms([t if i == ref else rigid_matrix(rng.uniform(-4, 4), rng.uniform(-40, 40, 2),
                                                              center=tissue.center) @ t
                              for i, t in enumerate(truth)])
    else:
        align_stack(stack, reference=ref).apply(stack)
        figs[f"{tag}.align_seconds"] = round(time.perf_counter() - t0, 1)
    e0 = _map_error(stack, stack.transforms(), truth)
    res = refine_stack(stack, reference=ref, **refine_kw)
    e1 = _map_error(stack, res.matrices, truth)
    figs[f"{tag}.spot_spacing_um"] = 50.0
    figs[f"{tag}.map_error_um_before"] = round(float(e0.mean()), 2)
    figs[f"{tag}.map_error_um_after"] = round(float(e1.mean()), 2)
    figs[f"{tag}.per_section_um_before"] = " ".join(f"{v:.1f}" for v in e0)
    figs[f"{tag}.per_section_um_after"] = " ".join(f"{v:.1f}" for v in e1)
    figs[f"{tag}.ratio_error_after_vs_before"] = round(float(e1.mean() / max(e0.mean(), 1e-9)), 3)
    b = _best_refined(res)
    if b is not None and not res.kept:  # what the safeguard kept out
        figs[f"{tag}.map_error_um_best_refined_round_not_kept"] = round(float(_map_error(stack, res.candidates[b],
                                                                                         truth).mean()), 2)
        figs[f"{tag}.heldout_rmse_best_refined_round_not_kept"] = round(res.scores[b]["rmse"], 4)
    _score_figs(figs, tag, res)


def merfish(figs: dict, seeds=MERFISH_SEEDS, sections=None, **refine_kw):
    from bench_align import _merfish_sections, _move, _region_agreement

    from napari_inrst.align import align_stack
    from napari_inrst.field.refine import refine_stack
    from napari_inrst.stack import build_stack

    ads, z, names = _merfish_sections(sections)
    ref = len(ads) // 2
    figs["merfish.sections"] = " ".join(names)
    base = align_stack(build_stack(ads, z, names=names, normalize="none"), reference=ref, seed=0)
    for seed in seeds:
        tag = f"merfish.seed{seed}"
        moved, truth, _ = _move(ads, ref, seed)
        stack = build_stack(moved, z, names=names, normalize="none")
        t0 = time.perf_counter()
        align_stack(stack, reference=ref, seed=seed + 1).apply(stack)
        figs[f"{tag}.align_seconds"] = round(time.perf_counter() - t0, 1)
        rigid = stack.transforms()
        res = refine_stack(stack, reference=ref, **refine_kw)
        known = [m0 @ t for m0, t in zip(base.matrices, truth)]
        for when, mats in (("before", rigid), ("after", res.matrices)):
            figs[f"{tag}.error_vs_published_um_{when}"] = round(float(_map_error(stack, mats, truth).mean()), 2)
            figs[f"{tag}.known_motion_error_um_{when}"] = round(float(_map_error(stack, mats, known).mean()), 2)
            # region agreement in the published frame's terms: the moved coordinates through each transform
            figs[f"{tag}.region_agreement_{when}"] = round(_region_agreement(moved, mats), 4)
        b = _best_refined(res)
        if b is not None and not res.kept:  # what the safeguard kept out
            cand = res.candidates[b]
            figs[f"{tag}.known_motion_error_um_best_refined_round_not_kept"] = round(
                float(_map_error(stack, cand, known).mean()), 2)
            figs[f"{tag}.region_agreement_best_refined_round_not_kept"] = round(_region_agreement(moved, cand), 4)
            figs[f"{tag}.heldout_rmse_best_refined_round_not_kept"] = round(res.scores[b]["rmse"], 4)
        _score_figs(figs, tag, res)


def run(quick: bool = True) -> dict:
    figs: dict = {}
    synthetic(figs)
    synthetic(figs, perturb=True)
    with_shared(figs, "merfish", "merfish_hypothalamus", merfish, **(MERFISH_QUICK if quick else {}))
    return plain(figs)


if __name__ == "__main__":
    main(run)
