"""``napari-inrst align``: align sections into the frame of a reference section, print/write JSON."""

from __future__ import annotations

import json
import sys

from ._common import add_stack_options, load_stack, print_or_write

HELP = "align serial sections (expression-matched rigid fit); print or write the transforms as JSON"


def add_parser(sub):
    p = sub.add_parser(
        "align", help=HELP,
        description=HELP + ': a list in input order of {"section": name, "matrix": [[a, b, tx], '
                           '[c, d, ty], [0, 0, 1]]} mapping each section\'s input coordinates (µm) into '
                           "the reference section's frame (identity for the reference). With --method nonrigid "
                           'each entry also has "deformation": a smooth displacement grid applied to the '
                           "input coordinates before the matrix (null for the reference; see the README).")
    add_stack_options(p, z_required=False)
    p.add_argument("--reference", type=int, metavar="K", default=None,
                   help="0-based index of the reference section (default: the middle one, n//2)")
    p.add_argument("--method", choices=["rigid", "similarity", "nonrigid", "none"], default="rigid",
                   help="rigid (default; mirrored sections detected), similarity (adds a uniform "
                        "scale), nonrigid (rigid, then a smooth expression-matched deformation per "
                        "section) or none (identities)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", metavar="T.json", help="write the JSON here (atomically) instead of printing it")
    p.add_argument("--quiet", action="store_true", help="no per-pair report on stderr")
    return p


def format_json(rows) -> str:
    return "[\n  " + ",\n  ".join(json.dumps(r) for r in rows) + "\n]" if rows else "[]"


def run(args) -> int:
    from ..align import align_stack, check_sections

    from ._spatialdata import any_store

    if args.z is None and not args.section_key and not any_store(args.sections):  # z does not enter a 2D alignment
        args.z = [10.0 * i for i in range(len(args.sections))]
    if args.out:
        from ..io.atomic import check_writable

        check_writable(args.out)
    stack = load_stack(args, min_sections=2)
    method = "rigid" if args.method == "nonrigid" else args.method
    check_sections(stack, method, args.reference)  # fail before any long work

    def progress(done, total, msg):
        if not args.quiet:
            print(f"[{done}/{total}] {msg}", file=sys.stderr)

    res = align_stack(stack, reference=args.reference, method=method, seed=args.seed, progress=progress)
    rows = res.to_json()
    if args.method == "nonrigid":
        from ..align.deform import magnitude_stats
        from ..align.nonrigid import match_deformations

        res.apply(stack)
        defs = match_deformations(stack, res.reference, seed=args.seed)
        for row, d, s in zip(rows, defs, stack.sections):
            row["deformation"] = None if d is None else d.to_json()
            if d is not None and not args.quiet:
                m = magnitude_stats(d, s.xy_input)
                print(f"{s.name}: deformation mean {m['mean_um']:.1f} µm, max {m['max_um']:.1f} µm", file=sys.stderr)
    if not args.quiet:
        for i, r in enumerate(res.residual_um):
            print(f"{stack.names[i]} ↔ {stack.names[i + 1]}: median matched-spot distance {r:.1f} µm",
                  file=sys.stderr)
        for name, m in zip(stack.names, res.mirrored):
            if m:
                print(f"{name}: mirrored (flipped to fit)", file=sys.stderr)
    print_or_write(format_json(rows), args.out)
    return 0
