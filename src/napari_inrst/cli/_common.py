"""Options and loading shared by the subcommands."""

from __future__ import annotations

import argparse

from ..errors import InputError


def add_stack_options(p: argparse.ArgumentParser, *, z_required: bool = True):
    p.add_argument("sections", nargs="+", metavar="SECTION.h5ad",
                   help="one .h5ad per section, in stack order (2D obsm['spatial'] in µm)")
    p.add_argument("--z", nargs="+", type=float, required=z_required, metavar="Z",
                   help="z position of each section in µm, in the same order")
    p.add_argument("--normalize", choices=["log1p", "none"], default="log1p",
                   help="log1p = log1p(counts per 10,000) (default); none = values as given")
    p.add_argument("--gene-policy", choices=["intersection", "union"], default="intersection",
                   help="genes kept across sections (default: intersection; union fills zeros)")
    p.add_argument("--unit-factor", type=float, default=1.0,
                   help="multiply coordinates and z by this to get µm (default 1)")


def load_stack(args, *, min_sections: int = 1, n_top_genes=None):
    from ..io.readers import read_h5ad
    from ..stack import build_stack

    if args.z is not None and len(args.z) != len(args.sections):
        raise InputError(None, f"{len(args.sections)} sections but {len(args.z)} values after --z; "
                               "give one z per section")
    if len(args.sections) < min_sections:
        raise InputError(", ".join(args.sections), f"needs at least {min_sections} sections; got {len(args.sections)}")
    counts = args.normalize == "log1p"
    adatas = [read_h5ad(p, counts_expected=counts) for p in args.sections]
    from pathlib import Path

    names = [Path(p).stem for p in args.sections]
    if len(set(names)) != len(names):
        names = [f"{i}:{n}" for i, n in enumerate(names)]
    return build_stack(adatas, args.z, names=names, sources=list(args.sections),
                       normalize=args.normalize, gene_policy=args.gene_policy,
                       unit_factor=args.unit_factor, n_top_genes=n_top_genes,
                       min_sections=min_sections)
