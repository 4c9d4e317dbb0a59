"""Field-driven rigid refinement of section transforms (slice-to-volume, as NeSVoR registers MRI
slices to the implicit volume it trains).

After the expression-matched rigid start (:func:`~napari_inrst.align.align_stack`), every
non-reference section's rigid transform is refined by minimizing the error of an expression field
at that section's cells, through the field's latent and gene decoder (torch; the field frozen, only
three numbers per section optimized: a rotation about the section's centroid and a translation).

A field trained on a section has partly memorized that section where it lies, so refining a
section against a field that saw it mostly confirms where it already is. The fields used here
therefore never see the section they place: the training sections are split into two
interleaved halves (A = every other section from the first, B = the rest), a short field is
trained on each, and the sections of one half are placed in the field of the other (what the
field interpolates between a section's neighbours). The same two fields give the held-out score
that decides whether a refinement is kept: each half's sections predicted by the other half's
field (error per gene ÷ the gene's spread, over all modeled genes). Rounds alternate: train the
two half fields on the current transforms → score → refine. The transforms of the round with the
best held-out score are kept; the rigid start is kept (the refinement reverted) unless a refined
round scores at least ``min_gain`` (0.5 %) better.

Safeguards: the reference section never moves; each step is bounded (``|Δθ| ≤ max_angle_deg``,
``|Δt| ≤ max_shift`` per round, through a tanh); a section is placed only where the other half's
field interpolates (its z strictly between that half's first and last sections: the first and
last sections of a stack keep their rigid transforms); per section the refined pose is kept only
where it lowers that section's error in the frozen field.

Measured (``benchmarks/bench_refine.py``): where the rigid start is already accurate (the
synthetic sample, 1.3 µm; MERFISH), refinement against half fields moved sections by up to tens
of µm while the held-out score changed by < 0.3 %: the fields' own bias (a blurred interpolation
between sections 2 spacings apart) is of the same order as the signal. Hence the margin.

Non-rigid (``deform=True``, ``fit --deform``): in each round, after the rigid step, every moving
section's smooth displacement grid (:mod:`napari_inrst.align.deform`; zero at the start, or the
grid the stack already carries) is optimized through the same frozen field of the other half
(:func:`napari_inrst.field.warp.deform_sections`); the round's transforms *and* grids are scored
and kept or reverted together by the same held-out rule.

Cost: ``2 × (rounds + 1)`` short field fits of ``field_steps`` steps each plus ``rounds`` transform
optimizations of ``steps`` full-batch steps (see :data:`FIELD_STEPS`, :data:`ROUNDS`).
torch is imported inside the functions that need it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..align.deform import get_deformations, magnitude_stats, set_deformations
from ..align.kabsch import rigid_matrix
from ..errors import InputError

#: training steps of each half field (short: the field only needs the section-scale structure)
FIELD_STEPS = 250
#: refine → re-train rounds
ROUNDS = 2
#: Adam steps of the transform optimization per round (full batch over the sampled cells)
STEPS = 60
MAX_ANGLE_DEG = 10.0
#: bound on the translation per round, in spot/cell spacings
MAX_SHIFT_SPACINGS = 3.0
#: cells per section used for the transform fit and the held-out score
MAX_CELLS = 2500
LR = 0.08
#: a refined round is kept only when its held-out RMSE is at least this fraction below the rigid
#: start's. Measured on the synthetic sample: refinements that moved well-placed sections away from
#: the truth gained 0.25 %; one that brought a section moved by 41 µm back to 8 µm gained 0.83 %,
#: one that brought 3 of 7 poorly placed sections closer 1.4 %. A margin from few cases.
MIN_GAIN = 0.005


@dataclass
class RefineResult:
    """Refined transforms (3×3, input → stack frame) and what the refinement measured.

    ``matrices``: the transforms to use (the refined ones when ``kept``, else ``initial``);
    ``scores``: per round ``{"rmse": …, "pearson": …}`` of the held-out-section prediction (round 0:
    the rigid start); ``deltas``: per section the change from ``initial`` to ``matrices``
    (``{"angle_deg", "tx_um", "ty_um"}``: rotation about the section's centroid and the centroid's
    shift; None for the reference).
    """

    matrices: list
    initial: list
    reference: int
    kept: bool
    round_kept: int
    scores: list = field(default_factory=list)
    deltas: list = field(default_factory=list)
    seconds: float = 0.0
    names: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    #: the transforms of every round (0: the rigid start), kept or not (for benchmarks; not stored)
    candidates: list = field(default_factory=list)
    #: ``deform=True``: per section the kept :class:`~napari_inrst.align.deform.Deformation` or None
    #: (all None when reverted); ``deform_candidates``: those of every round (0: the start)
    deformations: list | None = None
    deform_candidates: list = field(default_factory=list)

    def apply(self, stack):
        stack.set_transforms([np.asarray(m, dtype=np.float64) for m in self.matrices])
        if self.deformations is not None:
            from ..align.deform import set_deformations

            set_deformations(stack, self.deformations)
        return stack

    def to_meta(self) -> dict:
        """JSON-ready summary stored in a model's ``stack_meta['refinement']``."""
        return {
            "method": "field-driven rigid (slice-to-volume, interleaved half fields)",
            "reference": int(self.reference),
            "kept": bool(self.kept),
            "round_kept": int(self.round_kept),
            "scores": [{k: float(v) for k, v in s.items()} for s in self.scores],
            "deltas": [None if d is None else {k: float(v) for k, v in d.items()} for d in self.deltas],
            "initial_transforms": [np.asarray(m, dtype=float).tolist() for m in self.initial],
            "seconds": round(float(self.seconds), 2),
            "settings": dict(self.settings),
            "deformation": None if self.deformations is None else [
                None if d is None else {k: round(v, 3) for k, v in magnitude_stats(d, d.grid_points()).items()}
                for d in self.deformations],
        }


def delta_params(new, old, xy_input) -> dict:
    """Rotation (degrees) and centroid shift (µm, stack frame) of ``new`` relative to ``old``."""
    from ..stack import apply_transform

    D = np.asarray(new, dtype=np.float64) @ np.linalg.inv(np.asarray(old, dtype=np.float64))
    c = apply_transform(old, np.asarray(xy_input, dtype=np.float64)).mean(axis=0)
    t = apply_transform(D, c[None])[0] - c
    return {"angle_deg": math.degrees(math.atan2(D[1, 0], D[0, 0])), "tx_um": float(t[0]), "ty_um": float(t[1])}


def _sample_rows(n: int, k: int, rng) -> np.ndarray:
    return np.arange(n) if n <= k else np.sort(rng.choice(n, k, replace=False))


def _targets(model, section, rows) -> tuple[np.ndarray, np.ndarray]:
    """(stack-frame xy of ``rows``, their expression in the field's target space (÷ std, centred))."""
    X = np.asarray(section.X[rows], dtype=np.float32)
    if list(model.genes) != list(section.adata.var_names):
        raise InputError(section.name, "the field models other genes than this section holds")
    T = (X - model.mean) / model.std
    return section.xy[rows], T.astype(np.float32)


def refine_sections(model, stack, sections: Sequence[int], *, steps: int = STEPS,
                    max_angle_deg: float = MAX_ANGLE_DEG, max_shift_um: float | None = None,
                    max_cells: int = MAX_CELLS, lr: float = LR, seed: int = 0) -> tuple[list, list, list]:
    """Refine the rigid transforms of ``stack.sections[k] for k in sections`` against the frozen
    field ``model`` (a :class:`~napari_inrst.field.model.FieldModel`: its network's latent and gene
    decoder, through torch). Returns ``(matrices, loss_before, loss_after)`` per listed section;
    a section whose error did not go down keeps its matrix."""
    import torch

    sections = list(sections)
    if not sections:
        return [], [], []
    if max_shift_um is None:
        from .data import spacing_of

        max_shift_um = MAX_SHIFT_SPACINGS * spacing_of([stack.sections[k] for k in sections])
    rng = np.random.default_rng(seed)
    net = model.net
    was = [p.requires_grad for p in net.parameters()]
    for p in net.parameters():
        p.requires_grad_(False)
    dev = model.device
    P, T, Z, seg, cent = [], [], [], [], []
    o = model.origin  # the network's frame: stack µm less the field's origin
    for j, k in enumerate(sections):
        s = stack.sections[k]
        rows = _sample_rows(s.n_obs, max_cells, rng)
        xy, t = _targets(model, s, rows)
        c = xy.mean(axis=0)
        P.append(xy - c)
        T.append(t)
        Z.append(np.full(len(xy), s.z - o[2]))
        seg.append(np.full(len(xy), j))
        cent.append(c)
    to = lambda a, dt=torch.float32: torch.as_tensor(np.concatenate(a), dtype=dt, device=dev)  # noqa: E731
    P, T, Z, seg = to(P), to(T), to(Z), to(seg, torch.long)
    C = torch.as_tensor(np.asarray(cent) - o[:2], dtype=torch.float32, device=dev)  # centroids, network frame
    n_sec = len(sections)
    counts = torch.bincount(seg, minlength=n_sec).float()
    amax, tmax = math.radians(max_angle_deg), float(max_shift_um)
    raw = torch.zeros(n_sec, 3, device=dev, requires_grad=True)

    def pose(r):
        return amax * torch.tanh(r[:, 0]), tmax * torch.tanh(r[:, 1:])

    def losses(r):
        th, t = pose(r)
        c, s = torch.cos(th)[seg], torch.sin(th)[seg]
        x = c * P[:, 0] - s * P[:, 1] + (C[:, 0] + t[:, 0])[seg]
        y = s * P[:, 0] + c * P[:, 1] + (C[:, 1] + t[:, 1])[seg]
        pred = net.decoder(net.latent(torch.stack([x, y, Z], dim=1)))
        per_cell = ((pred - T) ** 2).mean(dim=1)
        return torch.zeros(n_sec, device=dev).index_add_(0, seg, per_cell) / counts

    opt = torch.optim.Adam([raw], lr=lr)
    try:
        with torch.no_grad():
            before = losses(raw).cpu().numpy().astype(float)
        best, best_raw = before.copy(), raw.detach().clone()
        for i in range(int(steps)):
            for g in opt.param_groups:  # cosine decay: large moves first, settle at the end
                g["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * i / max(steps, 1))))
            opt.zero_grad(set_to_none=True)
            L = losses(raw)
            cur = L.detach().cpu().numpy().astype(float)
            better = cur < best
            if better.any():  # the pose of this step (before its update) is the best so far
                idx = torch.as_tensor(np.flatnonzero(better), device=dev)
                best_raw[idx] = raw.detach()[idx]
                best[better] = cur[better]
            L.sum().backward()
            opt.step()
        with torch.no_grad():
            last = losses(raw).cpu().numpy().astype(float)
            better = last < best
            best_raw[torch.as_tensor(np.flatnonzero(better), device=dev)] = raw.detach()[
                torch.as_tensor(np.flatnonzero(better), device=dev)]
            best[better] = last[better]
            th, t = pose(best_raw)
            th, t = th.cpu().numpy().astype(float), t.cpu().numpy().astype(float)
    finally:
        for p, w in zip(net.parameters(), was):
            p.requires_grad_(w)
    mats = []
    for j, k in enumerate(sections):
        M = np.asarray(stack.sections[k].transform, dtype=np.float64)
        if not best[j] < before[j]:
            mats.append(M.copy())
            continue
        D = rigid_matrix(math.degrees(th[j]), t[j], center=cent[j])  # rotation about the centroid, then the shift
        mats.append(D @ M)
    return mats, list(before), list(best)


def heldout_score(model, stack, sections: Sequence[int], *, max_cells: int = MAX_CELLS, seed: int = 0) -> dict:
    """How well ``model`` predicts sections it was not trained on, at their cells (current
    transforms): RMSE per gene ÷ the gene's spread (the field's target space; lower is better)
    and the mean per-gene Pearson (:func:`napari_inrst.evaluate.pearson_per_gene`)."""
    from ..measure.metrics import pearson_per_gene

    rng = np.random.default_rng(seed + 7)
    err, n, truth, preds = 0.0, 0, [], []
    for k in sections:
        s = stack.sections[k]
        rows = _sample_rows(s.n_obs, max_cells, rng)
        xy, T = _targets(model, s, rows)
        xyz = np.column_stack([xy, np.full(len(xy), s.z)])
        pred = model.predict(xyz)
        P = (pred - model.mean) / model.std
        err += float(((P - T) ** 2).sum())
        n += T.size
        truth.append(T)
        preds.append(P)
    return {"rmse": math.sqrt(err / max(n, 1)),
            "pearson": float(pearson_per_gene(np.concatenate(truth), np.concatenate(preds)))}


def halves(stack) -> tuple[list[int], list[int]]:
    """The training sections split into two interleaved halves (by order)."""
    tr = stack.training_sections() if hasattr(stack, "training_sections") else list(range(len(stack)))
    return tr[0::2], tr[1::2]


def half_config(config=None, field_steps: int = FIELD_STEPS):
    """The short fit of each half field: one network, the default finest wavelength (2 spacings),
    no checkpoints, the network alone (no interpolant blend), no selection/final split."""
    import dataclasses

    from . import FieldConfig

    # a fit trains twice (a selection run on a held-out split, then the final run up to the
    # selected step), so each run gets half of ``field_steps``: a half field costs ≤ field_steps
    steps = max(10, int(field_steps) // 2)
    cfg = (config or FieldConfig()).replace(steps=steps, ensemble=1, checkpoint_every=0, val_every=max(1, steps // 5))
    if getattr(cfg.encoding, "min_wavelength_xy_um", None) is not None:  # Fourier: from the data's spacing
        cfg = cfg.replace(encoding=dataclasses.replace(cfg.encoding, min_wavelength_xy_um=None))
    # one network on the half, validated on its held-out spots: no task-mimicking selection and
    # no final run (a half field only has to place the other half's sections)
    return cfg.replace(blend=False, final_fit=False)


def refine_stack(stack, config=None, *, reference: int | None = None, rounds: int = ROUNDS,
                 field_steps: int = FIELD_STEPS, steps: int = STEPS, max_angle_deg: float = MAX_ANGLE_DEG,
                 max_shift_spacings: float = MAX_SHIFT_SPACINGS, max_cells: int = MAX_CELLS,
                 min_gain: float = MIN_GAIN, log: Callable[[str], None] | None = None,
                 should_stop: Callable[[], bool] | None = None, deform: bool = False,
                 deform_steps: int | None = None) -> RefineResult:
    """Refine the rigid transforms of ``stack`` (in place of nothing: call ``result.apply(stack)``)
    against fields trained on interleaved halves of its sections; see the module docstring.

    ``reference``: the section that stays fixed (default: the middle one, as alignment's). ``config``:
    the :class:`~napari_inrst.field.FieldConfig` of the fit (seed, device, batch size carry over).
    """
    from .data import spacing_of
    from .fit import fit_field

    t0 = time.perf_counter()
    n = len(stack)
    ref = n // 2 if reference is None else int(reference)
    if not 0 <= ref < n:
        raise InputError(None, f"reference section {reference} is out of range (0..{n - 1})")
    A, B = halves(stack)
    initial = [np.asarray(m, dtype=np.float64).copy() for m in stack.transforms()]
    settings = {"rounds": int(rounds), "field_steps": int(field_steps), "steps": int(steps),
                "max_angle_deg": float(max_angle_deg), "max_shift_spacings": float(max_shift_spacings),
                "max_cells": int(max_cells), "min_gain": float(min_gain), "deform": bool(deform)}
    start_defs = list(get_deformations(stack)) if deform else None
    say = log or (lambda *_: None)
    # a section is placed only where the other half's field interpolates (its z strictly between
    # that half's sections): beyond them the field is an extrapolation and would pull it astray
    zA, zB = [stack[k].z for k in A], [stack[k].z for k in B]
    inside = lambda k, zs: len(zs) > 0 and min(zs) < stack[k].z < max(zs)  # noqa: E731
    movers_B = [k for k in B if k != ref and inside(k, zA)]
    movers_A = [k for k in A if k != ref and inside(k, zB)]
    if not movers_A and not movers_B:
        say("refinement skipped: no section but the reference lies between two sections of the other half "
            "(needs ≥ 4 sections)")
        return RefineResult(initial, initial, ref, False, 0, [], [None if k == ref else
                            {"angle_deg": 0.0, "tx_um": 0.0, "ty_um": 0.0} for k in range(n)],
                            time.perf_counter() - t0, list(stack.names), settings, [initial],
                            start_defs, [start_defs] if deform else [])
    cfg = half_config(config, field_steps)
    seed = int(getattr(cfg, "seed", 0))
    spacing = spacing_of([stack.sections[k] for k in A + B])
    max_shift = max_shift_spacings * spacing
    work = stack.select(range(n)) if hasattr(stack, "select") else stack
    rounds_mats, rounds_defs = [initial], [start_defs]
    scores: list[dict] = []
    for r in range(int(rounds) + 1):
        work.set_transforms(rounds_mats[-1])
        if deform:
            set_deformations(work, rounds_defs[-1])
        fa = fit_field(work, cfg, sections=A, should_stop=should_stop)
        fb = fit_field(work, cfg, sections=B, should_stop=should_stop)
        sa = heldout_score(fa, work, B, max_cells=max_cells, seed=seed)
        sb = heldout_score(fb, work, A, max_cells=max_cells, seed=seed)
        nA, nB = sum(work[k].n_obs for k in A), sum(work[k].n_obs for k in B)
        wA, wB = min(nB, len(B) * max_cells), min(nA, len(A) * max_cells)
        score = {k: (sa[k] * wA + sb[k] * wB) / (wA + wB) for k in sa}
        scores.append(score)
        say(f"refine round {r}: held-out sections RMSE {score['rmse']:.4f}, Pearson {score['pearson']:.4f}"
            + (" (rigid start)" if r == 0 else ""))
        if r == int(rounds) or (should_stop is not None and should_stop()):
            break
        mats = [m.copy() for m in rounds_mats[-1]]
        for fld, movers in ((fa, movers_B), (fb, movers_A)):
            new, _, _ = refine_sections(fld, work, movers, steps=steps, max_angle_deg=max_angle_deg,
                                        max_shift_um=max_shift, max_cells=max_cells, seed=seed + r)
            for k, m in zip(movers, new):
                mats[k] = m
        rounds_mats.append(mats)
        if deform:  # the grids on top of this round's rigid poses, through the same frozen fields
            from .warp import deform_sections

            work.set_transforms(mats)
            defs = list(rounds_defs[-1])
            for fld, movers in ((fa, movers_B), (fb, movers_A)):
                new, _, _ = deform_sections(fld, work, movers, max_cells=max_cells, seed=seed + r,
                                            **({} if deform_steps is None else {"steps": int(deform_steps)}))
                for k, d in zip(movers, new):
                    defs[k] = d
            rounds_defs.append(defs)
    best = int(np.argmin([s["rmse"] for s in scores]))
    if not scores[best]["rmse"] <= (1.0 - min_gain) * scores[0]["rmse"]:
        best = 0
    chosen = rounds_mats[best]
    deltas = [None if k == ref else delta_params(chosen[k], initial[k], stack.sections[k].xy_input)
              for k in range(n)]
    res = RefineResult([m.copy() for m in chosen], initial, ref, best > 0, best, scores, deltas,
                       time.perf_counter() - t0, list(stack.names), settings, rounds_mats,
                       rounds_defs[best] if deform else None, rounds_defs if deform else [])
    if best > 0:
        moved = [d for d in deltas if d is not None]
        say(f"refinement kept (round {best}): held-out RMSE {scores[0]['rmse']:.4f} → {scores[best]['rmse']:.4f}; "
            f"largest change {max(abs(d['angle_deg']) for d in moved):.2f}°, "
            f"{max(math.hypot(d['tx_um'], d['ty_um']) for d in moved):.1f} µm; {res.seconds:.0f} s")
    else:
        say(f"refinement reverted: held-out score not better than the rigid start ({res.seconds:.0f} s)")
    return res


def refine_for_fit(stack, config, *, reference: int | None = None, deform: bool = False, log=None,
                   should_stop=None):
    """The refinement ``fit`` runs before its fit: :func:`refine_stack` with half fields never
    longer than the fit (a quick fit stays quick), on 3,000 cells per section of a lazily read
    stack, its result (kept or reverted) written into ``stack``. None with fewer than 2 training
    sections."""
    if len(stack.training_sections()) < 2:
        return None
    target = stack.subsample(3000, seed=int(config.seed)) if getattr(stack, "lazy", False) else stack
    res = refine_stack(target, config, reference=reference, log=log, should_stop=should_stop,
                       field_steps=min(FIELD_STEPS, int(config.steps)), deform=bool(deform))
    res.apply(stack)  # the transforms (and with deform the kept grids, or none when reverted)
    return res
