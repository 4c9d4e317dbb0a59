"""Alignment quality and speed (issue 3).

    python benchmarks/run.py --only align [--quick]      (or: python benchmarks/bench_align.py [--full])

* synthetic sample (8 sections; rotations ≤ ±30°, shifts ≤ 25 % of the width, one mirrored): mean
  displacement error against the analytic truth, % of the section width (target < 2 %); mirror
  found; baseline: no alignment (identity), same run.
* MERFISH hypothalamus (5 sections; quick: sections 14 and 19) with random known rigid motions
  (±30°, shifts ≤ 25 % of the width) applied to every section but the reference; odd seeds also
  mirror one section. Full: seeds 0–4; quick: seed 1. The decision figure is the *known-motion
  error*: mean cell displacement between the alignment of the moved sections and the alignment
  of the unmoved ones carried through the known motions (target < 10 µm). It is not measured
  against the published coordinates: those only centre each section on its cell centroid (every
  section's mean is exactly (0, 0) and each covers an axis-aligned square of the slide), so they
  are not an alignment. The distance to them is reported (``error_vs_published_frame_um``), with
  independent evidence of which frame is better: the fraction of cells whose nearest cell in the
  adjacent section carries the same ``Region`` label (labels the aligner never sees).
* breast ST (4 sections, truly unaligned; array coordinates × 200 µm): ours, PASTE (when
  importable) and no alignment, in the same run, on the same two metrics:
  - ``expr_matched_distance_um`` (alignment-independent pairs): for each adjacent pair, spots are
    paired once, for all methods, by mutual best Pearson correlation of their niche profiles
    (30 PCs of log1p-CP10k expression of the shared genes, each section centred, mixed with the
    mean over each spot's neighbours in its own section; no cross-section positions); the figure
    is the median distance of those pairs after each method's transforms, averaged over the 3
    pairs. Only 35–55 pairs per section pair and many are false matches (tumour regions look
    alike), so it is coarse (hundreds of µm even when aligned).
  - ``matched_spot_distance_um`` (the residual napari-inrst reports): median distance from each
    spot to its partner in the adjacent section, the spot among its 24 nearest minimizing
    d²/(2h)² + 8·(1 − corr) (niche profiles), same code for all methods.
  And the run time of each method, with the ratios ours/PASTE. PASTE gets raw counts and the
  array coordinates as distributed (genes with ≥ 15 counts, alpha 0.1, as in its tutorial),
  ``pairwise_align`` on adjacent pairs then ``stack_slices_pairwise``; its transforms are read
  back by a rigid fit of input → stacked coordinates (exact to 1e-11 µm). Quick: no PASTE.

PASTE is an optional benchmark dependency (``pip install .[bench]``), not a project dependency.
paste-bio 1.4.0 declares no requirements but imports POT, scikit-learn, seaborn and matplotlib; it
fails with POT ≥ 0.9.5 (``line_search`` signature) and needs no torch. To add it without touching
the venv, install it into a side folder pinned to the venv's versions, then put it on the path::

    pip freeze --exclude-editable > /tmp/venv-constraints.txt
    pip install --target /tmp/paste_env -c /tmp/venv-constraints.txt paste-bio "pot==0.9.4" scikit-learn seaborn
    PYTHONPATH=/tmp/paste_env python benchmarks/run.py --only align
"""

from __future__ import annotations

import time

import numpy as np

from _common import SHARED, main, plain, with_shared

BREAST_UNIT = 200.0
MERFISH_SEEDS = (0, 1, 2, 3, 4)
MERFISH_QUICK = {"seeds": (1,), "sections": ("section_14", "section_19")}


def _displacement(stack, matrices, truth) -> np.ndarray:
    """Mean |M_est x − M_true x| per section (µm)."""
    from napari_inrst.stack import apply_transform

    return np.array([np.linalg.norm(apply_transform(m, s.xy_input) - apply_transform(t, s.xy_input), axis=1).mean()
                     for s, m, t in zip(stack.sections, matrices, truth)])


def synthetic(figs: dict):
    from napari_inrst.align import align_stack
    from napari_inrst.synthetic.sample import sample_stack

    stack, tissue = sample_stack()
    truth = [np.asarray(s.adata.uns["truth_matrix"]) for s in stack]
    ref = len(stack) // 2
    assert np.allclose(truth[ref], np.eye(3)), "the sample's unmoved section is not len//2"
    width = float(np.ptp(stack[ref].xy_input[:, 0]))
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


# --- MERFISH -----------------------------------------------------------------------------------
def _merfish_sections(names=None):
    from napari_inrst.io.readers import read_h5ad

    files = sorted((SHARED / "merfish_hypothalamus").glob("section_*.h5ad"))
    if names is not None:
        files = [f for f in files if f.stem in names]
    ads = [read_h5ad(f, counts_expected=False) for f in files]
    z = [1000 * float(np.asarray(a.obs["slice_id"])[0]) for a in ads]
    return ads, z, [f.stem for f in files]


def _move(ads, ref: int, seed: int, max_angle: float = 30.0):
    """Copies of ``ads`` with known rigid motions (odd seeds: one section also mirrored) and the
    motions (moved coordinates → published frame)."""
    from napari_inrst.synthetic.sample import rigid_matrix

    rng = np.random.default_rng(seed)
    movers = [i for i in range(len(ads)) if i != ref]
    mirror_at = movers[seed % len(movers)] if seed % 2 else None
    truth, moved = [], []
    for i, a in enumerate(ads):
        xy = np.asarray(a.obsm["spatial"], dtype=np.float64)
        width = float(np.ptp(xy[:, 0]))
        M = np.eye(3) if i == ref else rigid_matrix(rng.uniform(-max_angle, max_angle),
                                                    rng.uniform(-0.25, 0.25, 2) * width,
                                                    mirror=(i == mirror_at), center=xy.mean(0))
        Minv = np.linalg.inv(M)
        b = a.copy()
        b.obsm["spatial"] = xy @ Minv[:2, :2].T + Minv[:2, 2]
        truth.append(M)
        moved.append(b)
    return moved, truth, mirror_at


def _region_agreement(ads, matrices) -> float:
    """Mean over adjacent pairs of the fraction of cells whose nearest cell in the next section
    (after the transforms) has the same ``Region`` label."""
    from scipy.spatial import cKDTree

    from napari_inrst.stack import apply_transform

    out = []
    for i in range(len(ads) - 1):
        ya = apply_transform(matrices[i], np.asarray(ads[i].obsm["spatial"], dtype=float))
        yb = apply_transform(matrices[i + 1], np.asarray(ads[i + 1].obsm["spatial"], dtype=float))
        la, lb = (np.asarray(ads[k].obs["Region"]).astype(str) for k in (i, i + 1))
        _, j = cKDTree(ya).query(yb)
        out.append(float(np.mean(la[j] == lb)))
    return float(np.mean(out))


def merfish(figs: dict, seeds=MERFISH_SEEDS, sections=None):
    from napari_inrst.align import align_stack
    from napari_inrst.stack import build_stack

    ads, z, names = _merfish_sections(sections)
    ref = len(ads) // 2
    figs["merfish.sections"] = " ".join(names)
    figs["merfish.cells"] = int(sum(a.n_obs for a in ads))
    t0 = time.perf_counter()
    base = align_stack(build_stack(ads, z, names=names, normalize="none"), reference=ref, seed=0)
    figs["merfish.seconds_unmoved"] = round(time.perf_counter() - t0, 2)
    figs["merfish.region_agreement_published_frame"] = round(_region_agreement(ads, [np.eye(3)] * len(ads)), 4)
    figs["merfish.region_agreement_aligned"] = round(_region_agreement(ads, base.matrices), 4)
    errs, pubs, secs, mirrors_ok = [], [], [], []
    for seed in seeds:
        moved, truth, mirror_at = _move(ads, ref, seed)
        stack = build_stack(moved, z, names=names, normalize="none")
        t0 = time.perf_counter()
        res = align_stack(stack, reference=ref, seed=seed + 1)  # other random draws than the unmoved run
        secs.append(time.perf_counter() - t0)
        err = _displacement(stack, res.matrices, [m0 @ t for m0, t in zip(base.matrices, truth)])
        pub = _displacement(stack, res.matrices, truth)
        expected = [i == mirror_at for i in range(len(ads))]
        ok = res.mirrored == expected
        errs.append(err.mean())
        pubs.append(pub.mean())
        mirrors_ok.append(ok)
        tag = f"merfish.seed{seed}"
        figs[f"{tag}.known_motion_error_um"] = round(float(err.mean()), 2)
        figs[f"{tag}.per_section_um"] = " ".join(f"{e:.1f}" for e in err)
        figs[f"{tag}.mirrored"] = ((f"{names[mirror_at]}: " if mirror_at is not None else "none: ")
                                   + ("found" if ok else f"NOT found ({res.mirrored})"))
        figs[f"{tag}.error_vs_published_frame_um"] = round(float(pub.mean()), 1)
        figs[f"{tag}.baseline_identity_error_um"] = round(float(
            _displacement(stack, [np.eye(3)] * len(ads), [m0 @ t for m0, t in zip(base.matrices, truth)]).mean()), 1)
        figs[f"{tag}.seconds"] = round(secs[-1], 2)
    figs["merfish.known_motion_error_um_mean"] = round(float(np.mean(errs)), 2)
    figs["merfish.known_motion_error_um_worst_seed"] = round(float(np.max(errs)), 2)
    figs["merfish.target_um"] = 10.0
    figs["merfish.meets_target_every_seed"] = "yes" if max(errs) < 10 else "NO"
    figs["merfish.mirrors_found"] = f"{sum(mirrors_ok)}/{len(mirrors_ok)} seeds right"
    figs["merfish.error_vs_published_frame_um_mean"] = round(float(np.mean(pubs)), 1)
    figs["merfish.seconds_mean"] = round(float(np.mean(secs)), 2)


# --- breast ST ---------------------------------------------------------------------------------
def _breast_stack():
    from napari_inrst.io.readers import read_h5ad
    from napari_inrst.stack import build_stack

    files = sorted((SHARED / "breast_st").glob("section*.h5ad"))
    ads = [read_h5ad(f) for f in files]
    return build_stack(ads, [0.0, 1.0, 2.0, 3.0], names=[f.stem for f in files], unit_factor=BREAST_UNIT)


def _expression_pairs(stack) -> list:
    """Per adjacent pair: spots paired by mutual best correlation of their niche profiles (each
    section's own coordinates only; no alignment involved), the same pairs for every method."""
    from napari_inrst.align.matching import pair_features

    pairs = []
    for i in range(len(stack) - 1):
        a, b = stack[i], stack[i + 1]
        Fa, Fb, _ = pair_features(a.xy_input, a.X, b.xy_input, b.X, rng=np.random.default_rng(0))
        C = Fa @ Fb.T
        ba, bb = C.argmax(axis=1), C.argmax(axis=0)
        ia = np.flatnonzero(bb[ba] == np.arange(len(ba)))
        pairs.append((ia, ba[ia]))
    return pairs


def _expr_matched_distance(stack, matrices, pairs) -> list[float]:
    from napari_inrst.stack import apply_transform

    out = []
    for i, (ia, ib) in enumerate(pairs):
        ya = apply_transform(matrices[i], stack[i].xy_input[ia])
        yb = apply_transform(matrices[i + 1], stack[i + 1].xy_input[ib])
        out.append(float(np.median(np.linalg.norm(ya - yb, axis=1))))
    return out


def _matched_spot_distance(stack, matrices) -> list[float]:
    """Median distance of matched spots (nearest expression-aware partner) of adjacent sections."""
    from napari_inrst.align.matching import pair_features
    from napari_inrst.align.pairwise import matched_distances
    from napari_inrst.stack import estimate_spacing as spacing
    from napari_inrst.stack import apply_transform

    out = []
    for i in range(len(stack) - 1):
        a, b = stack[i], stack[i + 1]
        Fa, Fb, _ = pair_features(a.xy_input, a.X, b.xy_input, b.X, rng=np.random.default_rng(0))
        ya, yb = apply_transform(matrices[i], a.xy_input), apply_transform(matrices[i + 1], b.xy_input)
        out.append(float(np.median(matched_distances(ya, yb, Fa, Fb, max(spacing(ya), spacing(yb))))))
    return out


def paste_importable() -> str | None:
    """None when PASTE (paste-bio + POT) imports, else why not (a figure's text)."""
    try:
        import ot  # noqa: F401
        import paste  # noqa: F401
    except ImportError as exc:
        return (f"skipped: paste-bio not importable ({exc}); optional, see the install notes at the top of "
                "benchmarks/bench_align.py")
    return None


def paste_transforms(stack, unit: float = BREAST_UNIT, max_spots: int | None = None, reference: int = 0,
                     seed: int = 0):  # pragma: no cover - optional dependency
    """PASTE's pairwise alignment + stacking of ``stack``: (3×3 per section, seconds).

    Coordinates are given to PASTE divided by ``unit`` (the spot spacing: the array units its
    ``alpha`` was tuned on). ``max_spots``: PASTE's optimal transport is quadratic in memory and
    about cubic in time, so larger sections are fitted on a random subset of that many spots and
    the rigid motion it gives is applied to all. The matrices are expressed in the frame of
    section ``reference`` (identity there; PASTE itself centres everything on slice 0).
    """
    import warnings

    import anndata as ad
    import paste as pst

    from napari_inrst.align import kabsch

    rng = np.random.default_rng(seed)
    slices, subsets = [], []
    for s in stack:
        X = s.adata.layers.get("counts", s.adata.X)
        X = np.asarray(X.todense() if hasattr(X, "todense") else X, dtype=np.float32)
        keep = np.arange(len(X))
        if max_spots is not None and len(X) > max_spots:
            keep = np.sort(rng.choice(len(X), max_spots, replace=False))
        a = ad.AnnData(X=X[keep], obs=s.adata.obs.iloc[keep][[]].copy(), var=s.adata.var[[]].copy())
        a = a[:, np.asarray(a.X.sum(axis=0)).ravel() >= 15].copy()  # as in PASTE's tutorial
        a.obsm["spatial"] = s.xy_input[keep] / unit
        slices.append(a)
        subsets.append(keep)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pis = [pst.pairwise_align(slices[i], slices[i + 1], alpha=0.1, verbose=False)
               for i in range(len(slices) - 1)]
        new = pst.stack_slices_pairwise(slices, pis)
    seconds = time.perf_counter() - t0
    # PASTE's Procrustes step has no reflection guard, so a mirrored section comes back mirrored
    mats = [kabsch(s.xy_input[k], np.asarray(n.obsm["spatial"], dtype=np.float64) * unit, allow_reflection=True)
            for s, k, n in zip(stack, subsets, new)]
    to_ref = np.linalg.inv(mats[reference])
    return [to_ref @ m for m in mats], seconds


def breast(figs: dict, with_paste: bool = True):
    from napari_inrst.align import align_stack

    stack = _breast_stack()
    t0 = time.perf_counter()
    res = align_stack(stack)
    methods = {"ours": (res.matrices, time.perf_counter() - t0),
               "identity": ([np.eye(3)] * len(stack), 0.0)}
    figs["breast.mirrors_reported"] = int(sum(res.mirrored))
    if not with_paste:
        figs["breast.paste"] = "skipped in --quick (full run only)"
    else:
        why = paste_importable()
        if why:
            figs["breast.paste"] = why
        else:
            methods["paste"] = paste_transforms(stack)
    pairs = _expression_pairs(stack)
    figs["breast.expr_pairs_per_section_pair"] = " ".join(str(len(p[0])) for p in pairs)
    for name, (mats, secs) in methods.items():
        d1 = _expr_matched_distance(stack, mats, pairs)
        d2 = _matched_spot_distance(stack, mats)
        figs[f"breast.{name}.expr_matched_distance_um"] = round(float(np.mean(d1)), 1)
        figs[f"breast.{name}.matched_spot_distance_um"] = round(float(np.mean(d2)), 1)
        figs[f"breast.{name}.matched_spot_distance_per_pair_um"] = " ".join(f"{v:.0f}" for v in d2)
        if name != "identity":
            figs[f"breast.{name}.seconds"] = round(secs, 2)
    for ref in ("identity", "paste"):
        if ref in methods:
            for m in ("expr_matched_distance_um", "matched_spot_distance_um"):
                figs[f"breast.ratio_{m}_ours_vs_{ref}"] = round(figs[f"breast.ours.{m}"] / figs[f"breast.{ref}.{m}"], 3)
    if "paste" in methods:
        figs["breast.ratio_seconds_ours_vs_paste"] = round(figs["breast.ours.seconds"] / figs["breast.paste.seconds"], 2)


def run(quick: bool = True) -> dict:
    figs: dict = {}
    synthetic(figs)
    with_shared(figs, "merfish", "merfish_hypothalamus", merfish, **(MERFISH_QUICK if quick else {}))
    with_shared(figs, "breast", "breast_st", breast, with_paste=not quick)
    return plain(figs)


if __name__ == "__main__":
    main(run)
