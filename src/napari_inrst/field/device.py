"""Where and how fast training runs: the torch device, CPU threads, torch.distributed, compilation
(imports torch: for training only)."""

from __future__ import annotations

import math
import os
import time

import torch
import torch.distributed as dist

from ..errors import InputError


def select_device(name: str = "auto"):
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError(None, "device 'cuda' requested but no CUDA GPU is available; use --device auto or cpu")
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InputError(None, "device 'mps' requested but Apple MPS is not available")
    return torch.device(name)


def busy_cores(window_s: float = 0.2) -> float:
    """Cores kept busy by *other* work right now: the machine's busy fraction over a short window
    (from ``/proc/stat``) while this thread sleeps. 0.0 where ``/proc/stat`` is not available."""

    def read():
        with open("/proc/stat") as fh:
            vals = [int(v) for v in fh.readline().split()[1:]]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
        return sum(vals), idle

    try:
        t0, i0 = read()
        time.sleep(window_s)
        t1, i1 = read()
    except (OSError, ValueError, IndexError):
        return 0.0
    dt = t1 - t0
    if dt <= 0:
        return 0.0
    return (1.0 - (i1 - i0) / dt) * (os.cpu_count() or 1)


def cpu_threads(requested: int) -> int:
    """Threads for CPU training: as requested, else the cores that other work leaves free.

    With OpenMP, asking for more threads than free cores makes every op wait on the busiest core
    (several times slower per step on a 2-core machine with one other busy process), so a
    machine busy with other work gets fewer threads. Measured over 0.2 s while this process
    waits, so its own earlier work does not count (a 1-minute load average would count it).
    """
    if requested and requested > 0:
        return int(requested)
    n = os.cpu_count() or 1
    free = n - int(math.floor(busy_cores() + 0.25))
    return int(max(1, min(torch.get_num_threads(), free)))


def dist_info():
    """(rank, world size) of an initialized torch.distributed group, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def maybe_compile(net, cfg, device, log=None):
    """``torch.compile`` the network where it pays (CUDA by default); eager on failure."""
    if cfg.compile == "off" or (cfg.compile == "auto" and device.type != "cuda"):
        return net
    try:
        return torch.compile(net, dynamic=False)
    except Exception as exc:  # noqa: BLE001 - no compiler toolchain, unsupported platform
        if log is not None:
            log(f"torch.compile unavailable ({type(exc).__name__}); running eagerly")
        return net


class nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
