"""``napari-inrst fit``: train an expression field on sections and write one model file."""

from __future__ import annotations

import sys
import time

import numpy as np

from ..errors import InputError
from ..stack.prepare import DEFAULT_GENE_CAP, model_genes, prepare_for_field
from ._common import add_fit_options, add_stack_options, load_stack

HELP = "train an expression field (INR) on serial sections and write a model file"
#: cells × genes (summed over the files) above which sections are read lazily by default
LAZY_VALUES = 200_000_000


def add_parser(sub):
    p = sub.add_parser("fit", help=HELP, description=HELP + ". Sections are aligned first (rigid, "
                       "reference = the middle section) unless --no-align, then their rigid transforms are "
                       "refined against fields trained on the other sections (kept only when held-out "
                       "sections are predicted better) unless --no-refine.")
    add_stack_options(p)
    p.add_argument("--out", required=True, metavar="MODEL", help="model file to write (.inrst)")
    add_fit_options(p, steps_help="training steps of the final fit (default from the config)",
                    genes_help=f"model the N most variable genes (+ the most expressed); default: all up to "
                               f"{DEFAULT_GENE_CAP:,}")
    from ..field.encodings import names as encoding_names

    p.add_argument("--encoding", choices=encoding_names(), default=None,
                   help="coordinate encoding of the network (default: the first, fourier; rff = Fourier "
                        "features in spread directions: no axis-aligned stripes, see the README)")
    p.add_argument("--no-refine", action="store_true",
                   help="keep the rigid alignment as found (skip the field-driven refinement, which adds "
                        "6 short fits of half the sections: about the time of the final fit)")
    p.add_argument("--deform", action="store_true",
                   help="also fit a smooth non-rigid deformation per section (a bounded B-spline displacement "
                        "grid, optimized through the half fields with the refinement and kept only when held-out "
                        "sections are predicted better); stored in the model and applied by 'map'")
    p.add_argument("--batch-size", type=int, default=None, metavar="B",
                   help="cells per training step (default 4096; per process under torchrun)")
    p.add_argument("--lazy", action="store_true",
                   help="read sections lazily (AnnData backed mode) and train on projected targets; "
                        f"automatic above {LAZY_VALUES:.0e} cells × genes")
    p.add_argument("--checkpoint", default=None, metavar="CKPT", help="write a training checkpoint here periodically")
    p.add_argument("--resume", default=None, metavar="CKPT", help="continue training from a checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def align_if_available(stack, reference=None, log=print):
    """Align ``stack`` in place through :mod:`napari_inrst.align` (skipped with a warning if absent)."""
    if len(stack) < 2:
        return None
    try:
        from ..align import align_stack  # noqa: F401 (lazy: the align layer may not be installed yet)
    except ImportError:
        log("napari-inrst: warning: alignment is not available in this version; using the coordinates as given")
        return None
    if reference is not None and not 0 <= reference < len(stack):
        raise InputError(None, f"--reference {reference} is out of range (0..{len(stack) - 1})")
    res = align_stack(stack, reference=reference, method="rigid", progress=None)
    res.apply(stack)
    return res


def _values_in_files(paths) -> float:
    """cells × genes summed over .h5ad files, read from their headers (0 where unknown)."""
    import h5py

    total = 0.0
    for p in paths:
        try:
            with h5py.File(p, "r") as fh:
                X = fh["X"]
                shape = X.attrs.get("shape") if isinstance(X, h5py.Group) else X.shape
                total += float(np.prod(shape))
        except Exception:  # noqa: BLE001 - unreadable here: the reader names the problem later
            continue
    return total


def use_lazy(args) -> bool:
    from ._spatialdata import any_store

    if getattr(args, "section_key", None) or any_store(args.sections):  # stores are read eagerly
        return False
    return bool(getattr(args, "lazy", False)) or _values_in_files(args.sections) > LAZY_VALUES


def prepare_stack(args, log=print):
    """The stack ``fit`` trains on: read (lazily for large inputs), genes chosen, aligned unless
    ``--no-align``. Shared by ``fit`` and the multi-process trainer (:mod:`napari_inrst.cli.distributed`)."""
    if not use_lazy(args):
        stack = load_stack(args)
        prepare_for_field(stack, args.genes)
        log(stack.summary())
        if not args.no_align:
            if align_if_available(stack, args.reference, log) is not None:
                log("aligned: " + ", ".join(stack.names))
        return stack
    from pathlib import Path

    from ..stack.lazy import open_lazy_stack

    if args.z is not None and len(args.z) != len(args.sections):
        raise InputError(None, f"{len(args.sections)} sections but {len(args.z)} values after --z; "
                               "give one z per section")
    stack = open_lazy_stack(args.sections, args.z, names=[Path(p).stem for p in args.sections],
                            normalize=args.normalize, gene_policy=args.gene_policy, unit_factor=args.unit_factor)
    log(f"{len(stack)} sections read lazily, {stack.n_obs} cells, {stack.n_genes} genes ({stack.gene_policy}), "
        f"normalize={stack.normalize}")
    sub = stack.subsample(3000, seed=args.seed)  # genes and alignment from a subset of each section
    chosen = model_genes(sub, args.genes)
    if chosen is not None:
        stack.restrict_genes([stack.genes[k] for k in chosen[0]])
        stack.report["gene_selection"] = chosen[1]
        log(f"modeling {stack.n_genes} genes: {chosen[1]}")
    if not args.no_align and len(stack) > 1:
        sub = stack.subsample(3000, seed=args.seed)
        res = align_if_available(sub, args.reference, log)
        if res is not None:
            stack.set_transforms(sub.transforms())
            log("aligned (on 3,000 cells per section): " + ", ".join(stack.names))
    return stack


def refine_if_aligned(stack, args, cfg, log=print):
    """Field-driven refinement of the rigid transforms (:mod:`napari_inrst.field.refine`) when
    ``fit`` aligned the sections (not ``--no-align``, not ``--no-refine``, ≥ 2 training sections).
    Updates the stack's transforms; returns the :class:`~napari_inrst.field.refine.RefineResult` or None."""
    if getattr(args, "no_align", False) or getattr(args, "no_refine", False):
        return None
    if len(stack.training_sections()) < 2:
        return None
    from ..field.refine import refine_for_fit

    log("refining the alignment against the field (--no-refine skips this)")
    return refine_for_fit(stack, cfg, reference=args.reference, deform=bool(getattr(args, "deform", False)), log=log)


def config_from_args(args):
    from ..field import FieldConfig

    if args.steps is not None and args.steps < 1:
        raise InputError(None, f"--steps must be ≥ 1, got {args.steps}")
    cfg = FieldConfig(seed=args.seed, device=args.device)
    if getattr(args, "encoding", None):
        cfg = cfg.replace(encoding=args.encoding)
    if args.steps is not None:
        cfg = cfg.replace(steps=int(args.steps), val_every=max(1, min(cfg.val_every, int(args.steps) // 4 or 1)))
    if getattr(args, "batch_size", None) is not None:
        if args.batch_size < 1:
            raise InputError(None, f"--batch-size must be ≥ 1, got {args.batch_size}")
        cfg = cfg.replace(batch_size=int(args.batch_size))
    return cfg


def progress_printer(log):
    def progress(d):
        if d.get("val") is not None:
            eta = f", eta {d['eta_s']:.0f} s" if d.get("eta_s") is not None else ""
            log(f"[{d['phase']}] step {d['step']}/{d['total']}: loss {d['loss']:.4f}, "
                f"validation RMSE {d['val']:.4f}, {d.get('samples_per_s', 0):.0f} cells/s{eta}")

    return progress


def run(args) -> int:
    from ..field.fit import fit_field

    from ..io.atomic import check_writable

    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    cfg = config_from_args(args)
    if getattr(args, "deform", False) and (args.no_refine or args.no_align):
        raise InputError(None, "--deform is fitted with the refinement: drop --no-refine / --no-align")
    # before any long work: an output that cannot be written fails now, not after training
    check_writable(args.out, what="model file")
    if args.checkpoint:
        check_writable(args.checkpoint, what="checkpoint")
    stack = prepare_stack(args, log)
    from ..field.data import spacing_of, unit_warning
    from ..field.report import format_validation, validation_warning

    if (w := unit_warning(spacing_of(stack.sections))) is not None:
        print(f"napari-inrst: warning: {w}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    refined = refine_if_aligned(stack, args, cfg, log)
    model = fit_field(stack, cfg, progress=progress_printer(log), checkpoint=args.checkpoint, resume=args.resume)
    if refined is not None:
        model.stack_meta["refinement"] = refined.to_meta()
        model.provenance["refine_seconds"] = round(float(refined.seconds), 2)
    model.provenance["command"] = "napari-inrst fit " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "fit"
    model.save(args.out)
    log(f"wrote {args.out}: {len(model.genes)} genes, {time.perf_counter() - t0:.1f} s on "
        f"{model.provenance['device']}; {format_validation(model.validation)}")
    if (w := validation_warning(model.validation)) is not None:
        print(f"napari-inrst: warning: {w}", file=sys.stderr, flush=True)
    return 0
