"""``napari-inrst evaluate``: fit without held-out sections, score the field against baselines.

    napari-inrst evaluate S1.h5ad … --z Z1 … --holdout I [J …] [--each] [--labels KEY] [--json OUT]
                          [fit's options: --normalize, --genes, --no-align | --reference K,
                           --steps, --device, --seed, --unit-factor, --gene-policy]
                          [--log1p-values] [--score-genes auto|all|N] [--baselines-only]

Prints a table of the INR vs the baselines (``knn3d``: inverse-distance kNN in 3D over the kept
sections; ``adjacent``: mean of the two neighbouring sections) – per-gene Pearson (and on 50 /
100 µm bins for single-cell data), RMSE, SSIM on rasterized gene images, ARI of domains when
``--labels`` is given, fit time, the hardware – and writes the same as JSON (atomic). The
held-out sections are left out together (one fit) or, with ``--each``, one at a time (one fit
per section, averaged: EVALUATION.md's missing-section protocol). With ``--missing-spots FRAC``
the task is EVALUATION.md's missing spots instead: FRAC of each --holdout section's spots are
removed at random (``--seed``), a field is fit on the rest of that section, the removed spots are
predicted and scored against ``knn2d`` (inverse-distance kNN of the 4 nearest kept spots).
Definitions: docs/EVALUATION.md (napari_inrst.evaluate).
"""

from __future__ import annotations

import json
import sys

from ..errors import InputError
from ._common import add_fit_options, add_stack_options, load_stack
from ..stack.prepare import select_model_genes
from .fit import align_if_available

HELP = "fit without held-out sections and score the field against interpolation baselines"


EPILOG = """examples:
  EVALUATION.md's reference MERFISH figures (values already normalized by cell volume, scored as
  log1p of the values as given; sections already aligned; middle section held out):
    napari-inrst evaluate section_04.h5ad section_09.h5ad section_14.h5ad section_19.h5ad \\
        section_24.h5ad --z 40 90 140 190 240 --normalize none --log1p-values --no-align \\
        --holdout 2 --labels Region
  each interior section held out in turn, averaged:  ... --holdout 1 2 3 --each
  missing spots, 50 % of sections 0 and 2 removed and predicted (one fit per section):
    ... --holdout 0 2 --missing-spots 0.5
  raw counts (log1p of counts per 10,000, the default):  napari-inrst evaluate s1.h5ad s2.h5ad \\
        s3.h5ad --z 0 10 20 --holdout 1
"""


def add_parser(sub):
    import argparse

    p = sub.add_parser("evaluate", help=HELP, description=HELP, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stack_options(p)
    for a in p._actions:  # say here how to get EVALUATION.md's "log1p values" for normalized data
        if a.dest == "normalize":
            a.help += ("; for data normalized upstream (e.g. MERFISH) use --normalize none "
                       "--log1p-values to fit and score log1p of the values as given")
    p.add_argument("--holdout", nargs="+", type=int, required=True, metavar="I",
                   help="0-based indices (input order) of the sections to hold out and predict")
    p.add_argument("--each", action="store_true",
                   help="hold the --holdout sections out one at a time (one fit each) and average, "
                        "instead of all together in one fit")
    p.add_argument("--missing-spots", type=float, default=None, metavar="FRAC",
                   help="missing spots instead of missing sections: remove FRAC (0–1, e.g. 0.5) of each "
                        "--holdout section's spots at random (--seed), fit on the rest of that section, "
                        "predict them; baseline knn2d")
    p.add_argument("--labels", metavar="KEY", default=None,
                   help="obs column with domain annotations: adds the ARI of predicted domains")
    p.add_argument("--json", metavar="OUT", default=None, help="write the results as JSON here")
    p.add_argument("--score-genes", default="auto", metavar="auto|all|N",
                   help="genes scored: auto (200 most expressed for counts, all otherwise), all, or N most expressed")
    p.add_argument("--log1p-values", action="store_true",
                   help="with --normalize none: fit and score log1p of the values as given (data normalized "
                        "upstream, e.g. MERFISH by cell volume; EVALUATION.md's reference figures)")
    add_fit_options(p, steps_help="training steps (default: the field's default)")
    p.add_argument("--baselines-only", action="store_true", help="skip the field (baselines only)")
    return p


def _score_genes(value: str):
    if value in ("auto", "all"):
        return value
    try:
        n = int(value)
    except ValueError:
        raise InputError(None, f"--score-genes must be auto, all or a number; got '{value}'") from None
    if n < 1:
        raise InputError(None, f"--score-genes must be ≥ 1; got {n}")
    return n


def check_holdout(holdout, n: int, sources=None, *, keep_one: bool = True) -> list[int]:
    """Validated, de-duplicated held-out indices (InputError on a bad index, or with ``keep_one``
    when no section is left to fit on)."""
    out = []
    for h in holdout:
        if not 0 <= h < n:
            raise InputError(None, f"--holdout {h} is out of range: {n} sections, indices 0–{n - 1}")
        if h not in out:
            out.append(h)
    if keep_one and len(out) >= n:
        raise InputError(None, f"--holdout names all {n} sections; keep at least one to fit on")
    return out


def _looks_unlogged(stack) -> bool:
    """Values as given that span orders of magnitude (not log-scaled): worth a --log1p-values hint."""
    import numpy as np

    X = stack.expression()
    pos = X[X > 0]
    return bool(pos.size and float(X.min()) >= 0 and np.percentile(pos, 99.9) > 20 * max(np.median(pos), 1e-9))


def _training_progress(log, every_s: float = 30.0):
    """A progress callback for the trainer: a line at most every ``every_s`` seconds."""
    import time

    last = [-1e9]

    def cb(d):
        if d.get("val") is None or time.perf_counter() - last[0] < every_s:
            return
        last[0] = time.perf_counter()
        eta = f", eta {d['eta_s']:.0f} s" if d.get("eta_s") is not None else ""
        log(f"[{d.get('phase', 'fit')}] step {d.get('step')}/{d.get('total')}: validation RMSE {d['val']:.4f}{eta}")

    return cb


def run(args) -> int:
    from ..evaluate.fitting import inr_fit_fn
    from ..evaluate.protocol import (format_per_section, format_table, leave_one_section_out, leave_out,
                                     log1p_values, missing_spots)
    from ..io.atomic import atomic_path

    score_genes = _score_genes(args.score_genes)
    if args.steps is not None and args.steps < 1:
        raise InputError(None, f"--steps must be ≥ 1; got {args.steps}")
    if args.genes is not None and args.genes < 1:
        raise InputError(None, f"--genes must be ≥ 1; got {args.genes}")
    spots = args.missing_spots
    if spots is not None and not 0.0 < spots < 1.0:
        raise InputError(None, f"--missing-spots takes a fraction between 0 and 1 (e.g. 0.5); got {spots:g}")
    if spots is not None and args.labels:
        raise InputError(None, "--labels scores predicted domains of held-out sections; it does not apply "
                               "to --missing-spots")
    if args.z is not None and getattr(args, "section_key", None) is None:
        check_holdout(args.holdout, len(args.sections), keep_one=spots is None)  # before reading anything
    stack = load_stack(args)
    holdout = check_holdout(args.holdout, len(stack), keep_one=spots is None)
    if args.reference is not None and not 0 <= args.reference < len(stack):
        raise InputError(None, f"--reference {args.reference} is out of range (0..{len(stack) - 1})")
    if args.labels:
        for s in stack.sections:
            if args.labels not in s.adata.obs:
                raise InputError(s.source, f"has no obs['{args.labels}'] (--labels); "
                                           f"obs columns: {', '.join(map(str, s.adata.obs.columns)) or 'none'}")
    if args.log1p_values:
        if args.normalize != "none":
            raise InputError(None, "--log1p-values applies to values as given: use it with --normalize none")
        stack = log1p_values(stack)
    elif args.normalize == "none" and _looks_unlogged(stack):
        print("napari-inrst: hint: values range over several orders of magnitude; EVALUATION.md scores "
              "normalized data as log1p of the values as given: add --log1p-values", file=sys.stderr)
    select_model_genes(stack, args.genes)  # as `fit` does: the field models these genes

    def progress(msg):
        print(f"napari-inrst: {msg}", file=sys.stderr, flush=True)

    # all sections, held-out ones included: they are scored in the stack frame (missing spots fit
    # one section at a time: no alignment needed)
    if not args.no_align and spots is None:
        align_if_available(stack, args.reference, progress)

    fit_fn = None
    if not args.baselines_only:
        from ..field import FieldConfig

        cfg = FieldConfig(seed=args.seed, device=args.device)
        if args.steps is not None:
            cfg = cfg.replace(steps=int(args.steps), val_every=max(1, min(cfg.val_every, int(args.steps) // 4 or 1)))
        fit_fn = inr_fit_fn(cfg, progress=_training_progress(progress))

    kw = dict(labels_key=args.labels, genes=score_genes, progress=progress)
    if spots is not None:
        result = missing_spots(stack, fit_fn, holdout, frac=spots, seed=args.seed, genes=score_genes)
        result["task"] += ", one fit per section on its kept spots"
        if len(holdout) > 1:
            result["task"] += ", averaged over sections"
        kept = "the kept spots of each section, that section only"
    elif args.each and len(holdout) > 1:
        result = leave_one_section_out(stack, fit_fn, holdout, **kw)
        result["task"] = "missing section, each held out in turn (one fit per section), averaged"
        kept = "all others (excluded ones aside), one fit per held-out section"
    else:
        result = leave_out(stack, fit_fn, holdout, **kw)
        if len(holdout) > 1:
            result["task"] = "missing sections, held out together (one fit)"
        kept = ", ".join(result["kept"])
    result["inputs"] = list(args.sections)
    result["z_um"] = [float(s.z) for s in stack.sections]
    print(f"task: {result['task']}")
    held = ", ".join(result["holdout"])
    if spots is not None:
        held = f"{spots:.0%} of the spots of {held} (seed {args.seed})"
    print(f"held out: {held}; fit on: {kept}")
    print(f"scored: {result['gene_selection']}, values: {result['values']}; hardware: {result['hardware']}")
    print(format_table(result))
    if len(result["holdout"]) > 1:
        print("per held-out section:")
        print(format_per_section(result))
    if "ari_measured" in result:
        print(f"ARI of the classifier on the measured held-out cells (reference): {result['ari_measured']:.3f}")
    if args.json:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(result, indent=2, default=float))
        print(f"wrote {args.json}")
    return 0
