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
* PASTE (``paste-bio``, when importable; see ``bench_align.py`` for the install): its rigid
  alignment (``pairwise_align`` on adjacent pairs, alpha 0.1, then ``stack_slices_pairwise``, as in
  its tutorial; coordinates in spot spacings, the units it was tuned on) of the same moved sections,
  expressed in the reference section's frame and scored with the same ``map`` error. On MERFISH it
  is fitted on ``PASTE_MAX_CELLS`` random cells per section (its transport plan is n × n per pair)
  and its motion applied to all cells. No refinement after it.
* moved atlas (issue 14's case; ``REFINE_CASES=atlas``): :func:`moved_atlas` — the sample's analytic
  tissue as single cells (an outline that changes with z), 8 sections 40 µm apart of 300 cells
  (~240 µm wide), every section but the middle one moved by a random rigid motion; error of ``map``
  against the true positions before and after refinement (bar: < 5 µm), PASTE; and for one seed
  the held-out middle-left section predicted at its true positions by a field trained on the others
  as placed vs 3D kNN over the others at their true positions (bar: field ≥ baseline).

``REFINE_CASES=synthetic,perturbed,merfish,atlas`` (default all) picks cases.
"""

from __future__ import annotations

import time

import numpy as np
from _common import main, plain, with_shared

MERFISH_SEEDS = (1,)
PASTE_MAX_CELLS = 1000  # PASTE's transport plan is n×n per pair: fitted on this many cells per section
MERFISH_QUICK = {"seeds": (1,), "sections": ("section_09", "section_14", "section_19", "section_24")}


def moved_atlas(n_sections: int = 8, cells_per_section: int = 300, spacing_z: float = 40.0, n_genes: int = 200,
                seed: int = 0, max_angle: float = 30.0, max_shift: float = 0.25):
    """Issue 14's moved-atlas case: the sample's analytic tissue (an outline that changes with z)
    as an atlas of single cells (uniform inside the outline, 10 µm apart on average, Poisson counts),
    cut into ``n_sections`` sections ``spacing_z`` µm apart of ``cells_per_section`` cells, every
    section but the middle one moved by a random rigid motion (±``max_angle``°, shifts ≤
    ``max_shift`` of the width; no mirror). Returns (stack, true matrices: input → tissue frame, tissue)."""
    import anndata as ad

    from napari_inrst.stack import build_stack
    from napari_inrst.synthetic.atlas import _cells, atlas_counts, atlas_tissue
    from napari_inrst.synthetic.sample import rigid_matrix

    tissue = atlas_tissue(n_sections * cells_per_section, n_genes, n_sections, spacing_z=spacing_z, seed=seed)
    rng = np.random.default_rng([seed, 14])
    ref = n_sections // 2
    ads, truth, z = [], [], []
    for i in range(n_sections):
        zi = i * spacing_z
        xy = _cells(tissue, zi, cells_per_section, rng)
        X = atlas_counts(tissue, np.column_stack([xy, np.full(len(xy), zi)]), rng)
        M = np.eye(3) if i == ref else rigid_matrix(rng.uniform(-max_angle, max_angle),
                                                    rng.uniform(-max_shift, max_shift, 2) * tissue.width,
                                                    center=tissue.center)
        Minv = np.linalg.inv(M)
        a = ad.AnnData(X=X)
        a.var_names = list(tissue.genes)
        a.obsm["spatial"] = xy @ Minv[:2, :2].T + Minv[:2, 2]
        ads.append(a)
        truth.append(M)
        z.append(zi)
    stack = build_stack(ads, z, names=[f"atlas_{i:02d}" for i in range(n_sections)])
    return stack, truth, tissue


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


def _paste_figs(figs, tag, stack, truth, ref, **kw):
    """PASTE's rigid alignment of the same sections (when importable): map error and seconds."""
    from bench_align import paste_importable, paste_transforms

    from napari_inrst.stack import estimate_spacing

    why = paste_importable()
    if why:
        figs[f"{tag}.paste"] = why
        return
    unit = estimate_spacing(stack[ref].xy_input)
    mats, secs = paste_transforms(stack, unit=unit, reference=ref, **kw)
    e = _map_error(stack, mats, truth)
    figs[f"{tag}.paste.map_error_um"] = round(float(e.mean()), 2)
    figs[f"{tag}.paste.per_section_um"] = " ".join(f"{v:.1f}" for v in e)
    figs[f"{tag}.paste.mirrored"] = " ".join(str(int(np.linalg.det(m[:2, :2]) < 0)) for m in mats)
    figs[f"{tag}.paste.seconds"] = round(secs, 1)
    if kw.get("max_spots"):
        figs[f"{tag}.paste.fitted_on_spots_per_section"] = kw["max_spots"]


def synthetic(figs: dict, perturb: bool = False, refine: bool = True, **refine_kw):
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
        _paste_figs(figs, tag, stack, truth, ref)
    e0 = _map_error(stack, stack.transforms(), truth)
    if not refine:
        figs[f"{tag}.map_error_um_before"] = round(float(e0.mean()), 2)
        return
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


def merfish(figs: dict, seeds=MERFISH_SEEDS, sections=None, refine: bool = True, **refine_kw):
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
        known = [m0 @ t for m0, t in zip(base.matrices, truth)]
        _paste_figs(figs, tag, stack, known, ref, max_spots=PASTE_MAX_CELLS, seed=seed)
        if not refine:
            figs[f"{tag}.known_motion_error_um_before"] = round(float(_map_error(stack, rigid, known).mean()), 2)
            continue
        res = refine_stack(stack, reference=ref, **refine_kw)
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


def _atlas_field(figs, tag, stack, truth, holdout: int, config=None):
    """The held-out section ``holdout`` predicted at its cells' true positions by a field trained
    on the other sections as placed (the stack's transforms), by 3D kNN over the other sections at
    their true positions (the bar's baseline) and as placed; per-gene Pearson and RMSE."""
    from napari_inrst.field import fit_field
    from napari_inrst.measure import metrics as M
    from napari_inrst.measure.baselines import knn3d
    from napari_inrst.stack import apply_transform

    kept = [i for i in range(len(stack)) if i != holdout]

    def true_xyz(i):
        s = stack[i]
        return np.column_stack([apply_transform(truth[i], s.xy_input), np.full(len(s.xy_input), stack.z[i])])

    X = stack[holdout].X
    q = true_xyz(holdout)
    t0 = time.perf_counter()
    model = fit_field(stack, config, sections=kept)
    figs[f"{tag}.field_fit_seconds"] = round(time.perf_counter() - t0, 1)
    preds = {"field_as_placed": model.predict(q),
             "knn3d_true_positions": knn3d(np.concatenate([true_xyz(i) for i in kept]),
                                           stack.expression(kept), q),
             "knn3d_as_placed": knn3d(stack.coords(kept), stack.expression(kept), q)}
    for name, p in preds.items():
        figs[f"{tag}.heldout_{name}.pearson"] = round(M.pearson_per_gene(X, p), 4)
        figs[f"{tag}.heldout_{name}.rmse"] = round(M.rmse(X, p), 4)


def atlas(figs: dict, seeds=(0, 1, 2), refine: bool = True, field_seeds=(0,), field_config=None, **refine_kw):
    """Issue 14's moved-atlas case (:func:`moved_atlas`): rigid alignment error of ``map``, after
    refinement, PASTE; for ``field_seeds`` the held-out field against 3D kNN on the true positions."""
    from napari_inrst.align import align_stack
    from napari_inrst.field.refine import refine_stack

    errs = []
    for seed in seeds:
        tag = f"atlas.seed{seed}"
        stack, truth, _ = moved_atlas(seed=seed)
        ref = len(stack) // 2
        if seed == seeds[0]:
            figs["atlas.sections"] = f"{len(stack)} × {len(stack[0].xy_input)} cells, {stack.z[1] - stack.z[0]:.0f} µm apart"
            figs["atlas.section_width_um"] = round(float(np.ptp(stack[ref].xy_input[:, 0])), 1)
        t0 = time.perf_counter()
        align_stack(stack, reference=ref, seed=seed).apply(stack)
        figs[f"{tag}.align_seconds"] = round(time.perf_counter() - t0, 1)
        e0 = _map_error(stack, stack.transforms(), truth)
        errs.append(e0.mean())
        figs[f"{tag}.map_error_um_before"] = round(float(e0.mean()), 2)
        figs[f"{tag}.per_section_um_before"] = " ".join(f"{v:.1f}" for v in e0)
        _paste_figs(figs, tag, stack, truth, ref)
        if refine:
            res = refine_stack(stack, reference=ref, **refine_kw)
            e1 = _map_error(stack, res.matrices, truth)
            figs[f"{tag}.map_error_um_after"] = round(float(e1.mean()), 2)
            figs[f"{tag}.per_section_um_after"] = " ".join(f"{v:.1f}" for v in e1)
            _score_figs(figs, tag, res)
            stack.set_transforms(res.matrices)
        if seed in field_seeds:
            _atlas_field(figs, tag, stack, truth, holdout=ref - 1, config=field_config)
    figs["atlas.map_error_um_before_mean"] = round(float(np.mean(errs)), 2)
    figs["atlas.bar_um"] = 5.0


CASES = ("synthetic", "perturbed", "merfish", "atlas")


def run(quick: bool = True) -> dict:
    """All cases, or those named in ``REFINE_CASES`` (comma-separated, from :data:`CASES`)."""
    import os

    cases = [c.strip() for c in os.environ.get("REFINE_CASES", ",".join(CASES)).split(",") if c.strip()]
    figs: dict = {}
    if "synthetic" in cases:
        synthetic(figs)
    if "perturbed" in cases:
        synthetic(figs, perturb=True)
    if "merfish" in cases:
        with_shared(figs, "merfish", "merfish_hypothalamus", merfish, **(MERFISH_QUICK if quick else {}))
    if "atlas" in cases:
        atlas(figs, **({"seeds": (0,)} if quick else {}))
    return plain(figs)


if __name__ == "__main__":
    main(run)
