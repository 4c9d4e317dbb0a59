"""Multi-process training with PyTorch DistributedDataParallel:

    torchrun --nproc_per_node N -m napari_inrst.cli.distributed S1.h5ad [S2.h5ad …] --z Z1 [Z2 …] --out MODEL [fit options]

The same options as ``napari-inrst fit`` and the same model file as the result. Each process
(one per GPU with NCCL; CPU processes with gloo) reads the stack, takes its share of the
training cells, and averages gradients with the others every step (the effective batch is N ×
``--batch-size``); validation errors are summed over processes, so all of them stop at the same
step. Process 0 aligns the sections (the others receive its transforms) and writes the model
file. Run without ``torchrun`` it is a plain single-process ``fit``.

Exit status: 0 on success, 2 on bad input (one line on stderr, nothing written), 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _parser() -> argparse.ArgumentParser:
    from . import fit

    top = argparse.ArgumentParser(prog="torchrun … -m napari_inrst.cli.distributed")
    sub = top.add_subparsers(dest="command")
    p = fit.add_parser(sub)
    p.prog = "torchrun --nproc_per_node N -m napari_inrst.cli.distributed"
    p.add_argument("--backend", choices=["auto", "nccl", "gloo"], default="auto",
                   help="process-group backend (auto: nccl on CUDA, else gloo)")
    return p


def _init_group(args):
    """Join the process group torchrun describes (RANK/WORLD_SIZE/MASTER_ADDR in the environment)."""
    import torch
    import torch.distributed as dist

    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return False
    cuda = args.device in ("auto", "cuda") and torch.cuda.is_available()
    backend = args.backend if args.backend != "auto" else ("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return True


def weights_checksum(model) -> float:
    """A float that differs when the network's weights differ (sum of |w| · a fixed pattern)."""
    import torch

    total = 0.0
    with torch.no_grad():
        for k, (name, v) in enumerate(sorted(model.net.state_dict().items())):
            v = v.detach().double().flatten()
            total += float((v.abs() * torch.linspace(1.0, 2.0, len(v), dtype=torch.float64)).sum()) * (k + 1)
    return total


def main(argv=None) -> int:
    from . import fit
    from ..errors import InputError

    args = _parser().parse_args(argv)
    distributed = _init_group(args)
    import torch.distributed as dist

    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    log = (lambda *a: None) if (args.quiet or rank != 0) else (lambda *a: print(*a, file=sys.stderr, flush=True))
    try:
        try:
            cfg = fit.config_from_args(args)
            align = not args.no_align
            args.no_align = True  # every process reads the stack; only process 0 aligns it
            stack = fit.prepare_stack(args, log)
            if align and len(stack) > 1:
                mats = [None]
                if rank == 0:
                    from ..stack.lazy import LazyStack

                    target = stack.subsample(3000, seed=args.seed) if isinstance(stack, LazyStack) else stack
                    fit.align_if_available(target, args.reference, log)
                    mats = [[m.tolist() for m in target.transforms()]]
                if distributed:
                    dist.broadcast_object_list(mats, src=0)
                stack.set_transforms(mats[0])
            log(f"training on {world} process(es), {cfg.batch_size} cells per process per step")
            from ..field.fit import fit_field

            t0 = time.perf_counter()
            model = fit_field(stack, cfg, progress=fit.progress_printer(log), checkpoint=args.checkpoint,
                              resume=args.resume)
            if distributed:  # DDP keeps the processes' weights identical: check it, do not assume it
                sums = [None] * world
                dist.all_gather_object(sums, weights_checksum(model))
                model.provenance["processes_agree"] = bool(all(abs(v - sums[0]) <= 1e-6 * (1 + abs(sums[0]))
                                                               for v in sums))
                if not model.provenance["processes_agree"]:
                    raise RuntimeError(f"processes ended with different weights (checksums {sums})")
            if rank == 0:
                model.provenance["command"] = "torchrun -m napari_inrst.cli.distributed " + " ".join(
                    argv if argv is not None else sys.argv[1:])
                model.save(args.out)
                log(f"wrote {args.out}: {len(model.genes)} genes, validation RMSE {model.provenance['val_rmse']:.4f}, "
                    f"{time.perf_counter() - t0:.1f} s on {world} × {model.provenance['device']}")
            if distributed:
                dist.barrier()
        except InputError as exc:
            if rank == 0:
                print(f"napari-inrst: error: {exc}", file=sys.stderr)
            return 2
    finally:
        if distributed and dist.is_initialized():
            import gc

            gc.collect()  # nothing holding the group's work objects outlives it
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
