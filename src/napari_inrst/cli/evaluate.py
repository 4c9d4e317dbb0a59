"""``napari-inrst evaluate``: fit without held-out sections, score the field against baselines.

    napari-inrst evaluate S1.h5ad … --z Z1 … --holdout I [J …] [--labels KEY] [--json OUT]
                          [fit's options: --normalize, --genes, --no-align | --reference K,
                           --steps, --device, --seed]

Prints a table of the INR vs the baselines (``knn3d``: inverse-distance kNN in 3D over the kept
sections; ``adjacent``: mean of the two neighbouring sections) – per-gene Pearson (and on 50 /
100 µm bins for single-cell data), RMSE, SSIM on rasterized gene images, ARI of domains when
``--labels`` is given, fit time – and writes the same as JSON (atomic). Definitions:
docs/EVALUATION.md (napari_inrst.evaluate).
"""

from __future__ import annotations

import json
import sys

from ..errors import InputError
from ._common import add_stack_options, load_stack
from .fit import align_if_available, select_model_genes

HELP = "fit without held-out sections and score the field against interpolation baselines"


def add_parser(sub):
    p = sub.add_parser("evaluate", help=HELP, description=HELP)
    add_stack_options(p)
    p.add_argument("--holdout", nargs="+", type=int, required=True, metavar="I",
                   help="0-based indices (input order) of the sections to hold out and predict")
    p.add_argument("--labels", metavar="KEY", default=None,
                   help="obs column with domain annotations: adds the ARI of predicted domains")
    p.add_argument("--json", metavar="OUT", default=None, help="write the results as JSON here")
    p.add_argument("--genes", type=int, default=None, metavar="N",
                   help="model N genes, chosen as `fit` does (default: all, up to 2,000)")
    p.add_argument("--score-genes", default="auto", metavar="auto|all|N",
                   help="genes scored: auto (200 most expressed for counts, all otherwise), all, or N most expressed")
    p.add_argument("--log1p-values", action="store_true",
                   help="score and fit log1p of the values (for data normalized upstream, with --normalize none)")
    al = p.add_mutually_exclusive_group()
    al.add_argument("--no-align", action="store_true", help="sections are already aligned")
    al.add_argument("--reference", type=int, default=None, metavar="K",
                    help="align to section K (0-based; default: the middle section)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the field's default)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto = CUDA, then MPS, then CPU")
    p.add_argument("--seed", type=int, default=0)
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


def check_holdout(holdout, n: int, sources=None) -> list[int]:
    """Validated, de-duplicated held-out indices (InputError on a bad index or nothing left)."""
    out = []
    for h in holdout:
        if not 0 <= h < n:
            raise InputError(None, f"--holdout {h} is out of range: {n} sections, indices 0–{n - 1}")
        if h not in out:
            out.append(h)
    if len(out) >= n:
        raise InputError(None, f"--holdout names all {n} sections; keep at least one to fit on")
    return out


def run(args) -> int:
    from ..evaluate.protocol import format_table, inr_fit_fn, leave_out, log1p_values
    from ..io.atomic import atomic_path

    score_genes = _score_genes(args.score_genes)
    if args.steps is not None and args.steps < 1:
        raise InputError(None, f"--steps must be ≥ 1; got {args.steps}")
    if args.genes is not None and args.genes < 1:
        raise InputError(None, f"--genes must be ≥ 1; got {args.genes}")
    if args.z is not None and getattr(args, "section_key", None) is None:
        check_holdout(args.holdout, len(args.sections))  # before reading anything
    stack = load_stack(args)
    holdout = check_holdout(args.holdout, len(stack))
    if args.reference is not None and not 0 <= args.reference < len(stack):
        raise InputError(None, f"--reference {args.reference} is out of range (0..{len(stack) - 1})")
    if args.labels:
        for s in stack.sections:
            if args.labels not in s.adata.obs:
                raise InputError(s.source, f"has no obs['{args.labels}'] (--labels); "
                                           f"obs columns: {', '.join(map(str, s.adata.obs.columns)) or 'none'}")
    if args.log1p_values:
        stack = log1p_values(stack)
    select_model_genes(stack, args.genes)  # as `fit` does: the field models these genes

    def progress(msg):
        print(f"napari-inrst: {msg}", file=sys.stderr, flush=True)

    if not args.no_align:  # all sections, held-out ones included: they are scored in the stack frame
        align_if_available(stack, args.reference, progress)

    fit_fn = None
    if not args.baselines_only:
        from ..field import FieldConfig

        cfg = FieldConfig(seed=args.seed, device=args.device)
        if args.steps is not None:
            cfg = cfg.replace(steps=int(args.steps), val_every=max(1, min(cfg.val_every, int(args.steps) // 4 or 1)))
        fit_fn = inr_fit_fn(cfg)

    result = leave_out(stack, fit_fn, holdout, labels_key=args.labels, genes=score_genes, progress=progress)
    result["inputs"] = list(args.sections)
    result["z_um"] = [float(s.z) for s in stack.sections]
    print(f"held out: {', '.join(result['holdout'])}; fit on: {', '.join(result['kept'])}")
    print(f"scored: {result['gene_selection']}, values: {result['values']}; hardware: {result['hardware']}")
    print(format_table(result))
    if "ari_measured" in result:
        print(f"ARI of the classifier on the measured held-out cells (reference): {result['ari_measured']:.3f}")
    if args.json:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(result, indent=2, default=float))
        print(f"wrote {args.json}")
    return 0
