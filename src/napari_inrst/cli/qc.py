"""``napari-inrst qc``: score every section against a field trained without it, flag damaged ones.

    napari-inrst qc S1.h5ad S2.h5ad … --z Z1 Z2 … [--json OUT] [--out QC.h5ad] [--steps N]
                    [--genes N] [--no-align | --reference K] [--seed S] [--device D]

The same core as the QC widget's "Check every section" (:func:`napari_inrst.evaluate.checks.section_consistency`):
one fit per section without it; the per-section score (Pearson on 50 µm bins for single-cell data,
per spot otherwise) and RMSE become robust z-scores across sections (median / MAD); a section with
z < −3 in score or > 3 in error is flagged. Prints a table (stderr) and the results as JSON
(stdout, or the file given by --json); ``--out QC.h5ad`` writes the sections with their scores
and flags in ``obs`` and the table in ``uns['napari_inrst_qc']``. Exit status 0 whether or not
sections are flagged.
"""

from __future__ import annotations

import json
import math
import sys

from ._common import add_fit_options, add_stack_options, load_stack, print_or_write

HELP = "score each section against a field trained without it; flag damaged/outlier sections"


def add_parser(sub):
    p = sub.add_parser("qc", help=HELP, description=HELP + " (table on stderr, JSON on stdout or --json).")
    add_stack_options(p)
    p.add_argument("--json", metavar="OUT", default=None, help="write the JSON here instead of stdout")
    p.add_argument("--out", metavar="QC.h5ad", default=None,
                   help="also write the sections with their QC scores/flags in obs (AnnData)")
    add_fit_options(p, steps_help="training steps of each fit (default: the field's default)")
    p.add_argument("--quiet", action="store_true", help="no progress lines and no table")
    return p


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def results_json(rows, settings: dict) -> dict:
    from ..evaluate.checks import FLAG_Z

    keys = ("index", "name", "z_um", "excluded", "score", "z_score", "pearson", "rmse", "rmse_rel", "z_rmse",
            "flagged", "reason")
    secs = [{k: _clean(r.get(k)) for k in keys} for r in rows]
    return {"flag_z": FLAG_Z, "flagged": [r["name"] for r in rows if r.get("flagged")],
            "sections": secs, "settings": settings}


def format_table(rows) -> str:
    lines = [f"{'section':<24} {'z (µm)':>8} {'score':>7} {'z':>6} {'RMSE':>8} {'z':>6}  flagged"]
    for r in rows:
        lines.append(f"{str(r['name'])[:24]:<24} {r['z_um']:>8g} {r['score']:>7.3f} {r['z_score']:>6.1f} "
                     f"{r['rmse']:>8.4f} {r['z_rmse']:>6.1f}  " + (f"YES: {r['reason']}" if r["flagged"] else "no"))
    return "\n".join(lines)


def run(args) -> int:
    from ..errors import InputError
    from ..evaluate.fitting import inr_fit_fn
    from ..evaluate.checks import section_consistency
    from ..stack.prepare import select_model_genes
    from .fit import align_if_available, config_from_args

    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    cfg = config_from_args(args)
    stack = load_stack(args)
    if len(stack) < 3:
        raise InputError(", ".join(args.sections), f"QC needs at least 3 sections (each is scored against a "
                                                   f"field of the others, then against the others' scores); got {len(stack)}")
    select_model_genes(stack, args.genes)
    log(stack.summary())
    if not args.no_align and align_if_available(stack, args.reference, log) is not None:
        log("aligned: " + ", ".join(stack.names))

    def progress(d):
        log(f"[{d['done']}/{d['total']}] {d['section']}: score {d['score']:.3f}")

    rows = section_consistency(stack, inr_fit_fn(cfg), progress=progress)
    settings = {"steps": cfg.steps, "seed": cfg.seed, "n_genes": stack.n_genes, "normalize": stack.normalize,
                "aligned": not args.no_align, "inputs": list(args.sections)}
    text = json.dumps(results_json(rows, settings), indent=2)
    log(format_table(rows))
    if args.out:
        from ..evaluate.checks import FLAG_Z
        from ..io.anndata_out import qc_anndata, write_h5ad

        write_h5ad(qc_anndata(stack, rows, settings={"flag_z": FLAG_Z, **settings}), args.out)
        log(f"wrote {args.out}")
    print_or_write(text, args.json)
    return 0
