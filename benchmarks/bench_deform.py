"""Non-rigid deformation (issue 14): sections moved by known rigid motions AND bent by known smooth
warps; mean error of ``map`` against the truth and the held-out field score, rigid vs non-rigid.

    python benchmarks/run.py --only deform [--quick]      (or: python benchmarks/bench_deform.py)

Warp of a section (all but the reference, which defines the frame, as for the rigid motions):
``x + A·(sin(2πv + φ1)·cos(πu + φ2), sin(2πu + φ3)·cos(πv + φ4))`` with u, v the coordinates
÷ the section's width about its centre and random phases (seeded): one smooth bend across the
section, components up to ``A``. Then the rigid motion of ``bench_align`` (±30°, shifts ≤ 25 % of
the width; odd seeds mirror one section).

Per case, the placement of every cell as ``map`` computes it (``align.mapping.map_points`` over the
transforms and deformations) against its true position (µm; the reference counts as 0):

* ``rigid``: the expression-matched rigid alignment (``align --method rigid``);
* ``matched``: + expression-matched grids (``align --method nonrigid``,
  :func:`napari_inrst.align.nonrigid.match_deformations`);
* ``field``: the rigid start refined with ``deform=True`` (``fit --deform``:
  :func:`napari_inrst.field.refine.refine_stack`; one round, half fields of ``FIELD_STEPS`` steps —
  fewer than ``fit``'s defaults, to fit the 2-core machine; the held-out rule decides what is kept),
  plus the error of its refined round when the rule reverted it.

``heldout_*``: the refinement's decision figure (each interleaved half's sections predicted by a short
field trained on the other half; RMSE ÷ gene spread, lower is better) for each placement.

MERFISH: error against the *known* truth — the rigid alignment of the unmoved, unwarped sections
carried through the known warps and motions (``bench_refine``'s ``known_motion_error``; the published
coordinates are only centred per section). Cases: a warp of 2 % of the width (36 µm), a 5 µm warp,
and no warp (does ``--deform`` make held-out scores worse?).
"""

from __future__ import annotations

import time

import numpy as np

from _common import main, plain, with_shared

FIELD_STEPS = 150
MERFISH_QUICK = ("section_09", "section_14", "section_19", "section_24")


def warp(xy, amp: float, seed: int) -> np.ndarray:
    xy = np.asarray(xy, dtype=np.float64)
    ph = np.random.default_rng(seed).uniform(0, 2 * np.pi, 4)
    c, w = xy.mean(axis=0), float(np.ptp(xy, axis=0).max())
    u, v = ((xy - c) / w).T
    return xy + amp * np.column_stack([np.sin(2 * np.pi * v + ph[0]) * np.cos(np.pi * u + ph[1]),
                                       np.sin(2 * np.pi * u + ph[2]) * np.cos(np.pi * v + ph[3])])


def _error(stack, mats, defs, truth_xy) -> float:
    """Mean over sections of mean |map(section, input xy) − truth| (µm)."""
    from napari_inrst.align.deform import deformations_json
    from napari_inrst.align.mapping import map_points

    meta = {"names": list(stack.names), "z": list(stack.z), "unit_factor": 1.0,
            "transforms": [np.asarray(m).tolist() for m in mats]}
    if defs is not None and any(d is not None for d in defs):
        meta["deformation"] = deformations_json(stack.names, defs)
    return float(np.mean([np.linalg.norm(map_points(meta, k, s.xy_input)[:, :2] - t, axis=1).mean()
                          for k, (s, t) in enumerate(zip(stack.sections, truth_xy))]))


def _heldout(stack, mats, defs) -> float:
    from napari_inrst.align.deform import set_deformations
    from napari_inrst.field.refine import half_config, halves, heldout_score
    from napari_inrst.field.fit import fit_field

    work = stack.select(range(len(stack)))
    work.set_transforms(mats)
    set_deformations(work, defs if defs is not None else [None] * len(stack))
    A, B = halves(work)
    cfg = half_config(None, FIELD_STEPS)
    fa, fb = fit_field(work, cfg, sections=A), fit_field(work, cfg, sections=B)
    sa, sb = heldout_score(fa, work, B), heldout_score(fb, work, A)
    nA, nB = sum(work[k].n_obs for k in A), sum(work[k].n_obs for k in B)
    return float((sa["rmse"] * nB + sb["rmse"] * nA) / (nA + nB))


def _case(figs, tag, stack, ref, truth_xy, seed=0):
    from napari_inrst.align import align_stack
    from napari_inrst.align.nonrigid import match_deformations
    from napari_inrst.field.refine import refine_stack

    n = len(stack)
    t0 = time.perf_counter()
    align_stack(stack, reference=ref, seed=seed).apply(stack)
    rigid = stack.transforms()
    figs[f"{tag}.align_seconds"] = round(time.perf_counter() - t0, 1)
    figs[f"{tag}.map_error_um_rigid"] = round(_error(stack, rigid, None, truth_xy), 2)
    t0 = time.perf_counter()
    matched = match_deformations(stack, ref, seed=seed)
    figs[f"{tag}.match_seconds"] = round(time.perf_counter() - t0, 1)
    figs[f"{tag}.map_error_um_matched"] = round(_error(stack, rigid, matched, truth_xy), 2)
    figs[f"{tag}.heldout_rmse_matched"] = round(_heldout(stack, rigid, matched), 4)
    res = refine_stack(stack, reference=ref, rounds=1, field_steps=FIELD_STEPS, deform=True)
    figs[f"{tag}.heldout_rmse_rigid"] = round(res.scores[0]["rmse"], 4) if res.scores else "skipped"
    figs[f"{tag}.map_error_um_field"] = round(_error(stack, res.matrices, res.deformations, truth_xy), 2)
    figs[f"{tag}.field_kept"] = "yes" if res.kept else "no (reverted)"
    figs[f"{tag}.field_seconds"] = round(res.seconds, 1)
    if len(res.scores) > 1:
        figs[f"{tag}.heldout_rmse_field_round1"] = round(res.scores[1]["rmse"], 4)
        figs[f"{tag}.map_error_um_field_round1"] = round(
            _error(stack, res.candidates[1], res.deform_candidates[1], truth_xy), 2)
    figs[f"{tag}.sections"] = n


def synthetic(figs, frac: float = 0.03):
    from napari_inrst.synthetic.sample import sample_stack

    stack, _ = sample_stack()
    ref = len(stack) // 2
    truth_xy = []
    for k, s in enumerate(stack):
        x = s.xy_input.copy()
        T = np.asarray(s.adata.uns["truth_matrix"])
        truth_xy.append(x @ T[:2, :2].T + T[:2, 2])
        if k != ref:
            s.adata.obsm["spatial"] = warp(x, frac * float(np.ptp(x, axis=0).max()), seed=k)
    figs["synthetic.warp_um"] = round(frac * float(np.ptp(stack[0].xy_input, axis=0).max()), 1)
    _case(figs, "synthetic", stack, ref, truth_xy)


def merfish(figs, amps=(("warp2pct", 0.02), ("warp5um", 5.0), ("nowarp", 0.0)), sections=MERFISH_QUICK, seed=1):
    from bench_align import _merfish_sections, _move

    from napari_inrst.align import align_stack
    from napari_inrst.stack import build_stack

    ads, z, names = _merfish_sections(sections)
    ref = len(ads) // 2
    figs["merfish.sections"] = " ".join(names)
    base = align_stack(build_stack(ads, z, names=names, normalize="none"), reference=ref, seed=0)
    for tag, a in amps:
        warped = []
        for k, ad in enumerate(ads):
            b = ad.copy()
            xy = np.asarray(ad.obsm["spatial"], dtype=np.float64)
            amp = a * float(np.ptp(xy, axis=0).max()) if a < 1 else a
            if k != ref and amp > 0:
                b.obsm["spatial"] = warp(xy, amp, seed=100 + k)
            warped.append(b)
        moved, _, _ = _move(warped, ref, seed)
        # truth: the unwarped published cell carried through the rigid alignment of the unmoved sections
        truth_xy = [np.asarray(ad.obsm["spatial"]) @ M[:2, :2].T + M[:2, 2] for ad, M in zip(ads, base.matrices)]
        stack = build_stack(moved, z, names=names, normalize="none")
        figs[f"merfish.{tag}.warp_um"] = round(amp if a >= 1 else a * 1790, 1)
        _case(figs, f"merfish.{tag}", stack, ref, truth_xy, seed=seed + 1)


def run(quick: bool = True) -> dict:
    figs: dict = {}
    synthetic(figs)
    with_shared(figs, "merfish", "merfish_hypothalamus", merfish)
    return plain(figs)


if __name__ == "__main__":
    main(run)
