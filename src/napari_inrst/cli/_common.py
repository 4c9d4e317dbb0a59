"""Options and loading shared by the subcommands."""

from __future__ import annotations

import argparse

from ..errors import InputError


def add_stack_options(p: argparse.ArgumentParser, *, z_required: bool = True):
    p.add_argument("sections", nargs="+", metavar="SECTION.h5ad",
                   help="one .h5ad per section, in stack order (2D obsm['spatial'] in µm), or a SpatialData "
                        ".zarr store (one section per annotated region, sorted)")
    # --z is checked in load_stack (so --section-key/--z-key can stand in for it)
    p.add_argument("--z", nargs="+", type=float, metavar="Z",
                   help="z position of each section in µm, in the same order"
                        + (" (required unless every file records its z in uns['z_um'], uns['z'] or a "
                           "constant obs['z'])" if z_required else ""))
    p.set_defaults(_z_required=z_required)
    p.add_argument("--normalize", choices=["log1p", "none"], default="log1p",
                   help="log1p = log1p(counts per 10,000) (default); none = values as given")
    p.add_argument("--gene-policy", choices=["intersection", "union"], default="intersection",
                   help="genes kept across sections (default: intersection; union fills zeros)")
    p.add_argument("--unit-factor", type=float, default=1.0,
                   help="multiply coordinates and z by this to get µm (default 1)")
    p.add_argument("--section-key", metavar="KEY",
                   help="one .h5ad holding all sections: split it by obs[KEY] (sections in sorted "
                        "label order, or by --z-key)")
    p.add_argument("--z-key", metavar="KEY",
                   help="with --section-key or a SpatialData store: the obs column holding each section's "
                        "z (µm before --unit-factor)")
    from ._spatialdata import add_spatialdata_options

    add_spatialdata_options(p)


def add_fit_options(p: argparse.ArgumentParser, *, steps_help: str, genes_help: str | None = None):
    """The options of every subcommand that fits fields (fit, evaluate, qc): the gene panel,
    alignment (--no-align / --reference), training steps, device and seed."""
    from ..stack.prepare import DEFAULT_GENE_CAP

    p.add_argument("--genes", type=int, default=None, metavar="N",
                   help=genes_help or f"model N genes, chosen as `fit` does (default: all, up to {DEFAULT_GENE_CAP:,})")
    al = p.add_mutually_exclusive_group()
    al.add_argument("--no-align", action="store_true", help="sections are already aligned (use the coordinates as given)")
    al.add_argument("--reference", type=int, default=None, metavar="K",
                    help="align to section K (0-based; default: the middle section)")
    p.add_argument("--steps", type=int, default=None, help=steps_help)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto = CUDA, then MPS, then CPU")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same machine: same model)")


def load_stack(args, *, min_sections: int = 1, n_top_genes=None):
    from ..io.readers import NO_Z_MESSAGE, read_h5ad, section_z
    from ..stack import build_stack
    from ._spatialdata import any_store, load_store_stack

    if any_store(args.sections):  # SpatialData .zarr stores (napari_inrst.io.spatialdata)
        return load_store_stack(args, min_sections=min_sections, n_top_genes=n_top_genes)
    if getattr(args, "section_key", None):
        return _load_split_stack(args, min_sections=min_sections, n_top_genes=n_top_genes)
    if args.z is not None and len(args.z) != len(args.sections):
        raise InputError(None, f"{len(args.sections)} sections but {len(args.z)} values after --z; "
                               "give one z per section")
    if len(args.sections) < min_sections:
        raise InputError(", ".join(args.sections), f"needs at least {min_sections} sections; got {len(args.sections)}")
    counts = args.normalize == "log1p"
    adatas = [read_h5ad(p, counts_expected=counts) for p in args.sections]
    z = args.z
    if z is None and getattr(args, "_z_required", False):
        # the files may record their own z (as the napari reader uses it); all or none
        z = [section_z(a) for a in adatas]
        lacking = [p for p, v in zip(args.sections, z) if v is None]
        if lacking:
            raise InputError(lacking[0], NO_Z_MESSAGE)
    from pathlib import Path

    names = [Path(p).stem for p in args.sections]
    if len(set(names)) != len(names):
        names = [f"{i}:{n}" for i, n in enumerate(names)]
    return build_stack(adatas, z, names=names, sources=list(args.sections),
                       normalize=args.normalize, gene_policy=args.gene_policy,
                       unit_factor=args.unit_factor, n_top_genes=n_top_genes,
                       min_sections=min_sections)


def _load_split_stack(args, *, min_sections: int, n_top_genes):
    """One .h5ad with a section column → a stack (z from --z, in the sections' sorted order, or --z-key)."""
    from ..io.readers import read_h5ad_sections
    from ..stack import build_stack

    if len(args.sections) != 1:
        raise InputError(None, "--section-key takes exactly one .h5ad holding all sections")
    counts = args.normalize == "log1p"
    secs = read_h5ad_sections(args.sections[0], args.section_key, z_key=args.z_key,
                              counts_expected=counts)
    if args.z_key is None:
        if args.z is None or len(args.z) != len(secs):
            labels = ", ".join(s.name for s in secs)
            raise InputError(args.sections[0], f"splits into {len(secs)} sections ({labels}); give "
                                               f"{len(secs)} values after --z in that order, or --z-key")
        z = list(args.z)
    else:
        z = [s.z for s in secs]  # raw units; build_stack applies --unit-factor
    return build_stack([s.adata for s in secs], z, names=[s.name for s in secs],
                       sources=[s.source for s in secs], normalize=args.normalize,
                       gene_policy=args.gene_policy, unit_factor=args.unit_factor,
                       n_top_genes=n_top_genes, min_sections=min_sections)


def print_or_write(text: str, out=None):
    """``text`` (plus a newline) to the file ``out`` (atomically), or to stdout when ``out`` is None."""
    if out:
        from ..io.atomic import atomic_path

        with atomic_path(out) as tmp:
            tmp.write_text(text + "\n")
    else:
        print(text)
