"""Training the expression field on a section stack.

:func:`iter_fit` is a generator (for napari's ``thread_worker``): it yields progress dicts
``{step, total, loss, losses: {...}, val, best_val, eta_s, phase, samples_per_s}`` and returns the
:class:`~.model.FieldModel` (``StopIteration.value``). :func:`fit_field` runs it to the end with
an optional ``progress`` callback and ``should_stop`` predicate.

What makes the field generalize instead of memorizing single cells:

* validation cells (``val_frac`` of the training sections, fixed by the seed) are held out; the
  weights with the best validation error are kept (early stopping with patience);
* the finest x/y wavelength of the Fourier encoding is chosen by validation: short probe runs for
  each candidate (multiples of the cell/spot spacing), then the full run at the best one; the
  finest z wavelength follows the section spacing (z is sampled far more sparsely than x, y);
* frequencies open coarse-to-fine during the first part of training;
* the latent is low-rank and the gene decoder starts from PCA of the data.

Speed: the data live on the training device; batches are drawn there (a device generator); the
loop never waits on the device except every ``log_every`` steps (progress) and at validation.
On CUDA: TF32 matmuls, bf16 autocast, ``torch.compile`` of the network (``config.compile``).
Large stacks train on projected targets (:class:`~.data.ProjectedData`, streamed from disk).
When ``torch.distributed`` is initialized with more than one process (``torchrun``, see
:mod:`napari_inrst.train`), the network is wrapped in DistributedDataParallel: every process
draws its batches from its own share of the training cells, gradients are averaged, validation
errors are summed over processes, so all processes take the same early-stopping decisions.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import time
from typing import Callable, Iterable

import numpy as np

from ..errors import InputError
from .config import FieldConfig
from .data import SMALL_DATA, choose_data

ENSEMBLE_SMALL = 4
PROBE_FRAC = 0.25  # steps of each wavelength probe, as a fraction of the final fit's
PROBE_FRAC_LARGE = 0.1
LARGE_DATA = 200_000  # training cells above which probes use PROBE_FRAC_LARGE


# --- device and threads ------------------------------------------------------------------
def select_device(name: str = "auto"):
    import torch

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


def _cpu_threads(requested: int) -> int:
    """Threads for CPU training: as requested, else the cores that other work leaves free.

    With OpenMP, asking for more threads than free cores makes every op wait on the busiest core
    (several times slower per step on a 2-core machine with one other busy process), so a
    machine busy with other work gets fewer threads. Measured over 0.2 s while this process
    waits, so its own earlier work does not count (a 1-minute load average would count it).
    """
    import torch

    if requested and requested > 0:
        return int(requested)
    n = os.cpu_count() or 1
    free = n - int(math.floor(busy_cores() + 0.25))
    return int(max(1, min(torch.get_num_threads(), free)))


def _dist():
    """(rank, world size) of an initialized torch.distributed group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# --- initialisation and schedule ---------------------------------------------------------
def _pca_init(net, Xs: np.ndarray, rank: int, seed: int):
    """Decoder ← the top principal axes of the training profiles (scaled so the latent starts at
    unit variance), bias ← the mean profile. Eigen-decomposition of the gene covariance (cheap)."""
    import torch

    rng = np.random.default_rng(seed)
    sub = Xs if len(Xs) <= 8000 else Xs[rng.choice(len(Xs), 8000, replace=False)]
    sub = torch.from_numpy(np.ascontiguousarray(sub, dtype=np.float32)).double()
    sub = sub - sub.mean(0)
    C = sub.T @ sub / max(len(sub), 1)
    evals, evecs = torch.linalg.eigh(C)
    order = torch.argsort(evals, descending=True)
    r = min(rank, C.shape[0])
    top = order[:r]
    W = torch.zeros(Xs.shape[1], rank, dtype=torch.float64)
    W[:, :r] = evecs[:, top] * torch.sqrt(torch.clamp(evals[top], min=0))
    with torch.no_grad():
        net.decoder.weight.copy_(W.float())
        net.decoder.bias.copy_(torch.tensor(Xs.mean(0), dtype=torch.float32))


def _fixed_decoder(net, basis: np.ndarray):
    """Projected targets: decoder ← the orthonormal PCA basis, bias 0, frozen."""
    import torch

    with torch.no_grad():
        net.decoder.weight.copy_(torch.from_numpy(basis))
        net.decoder.bias.zero_()
    net.decoder.weight.requires_grad_(False)
    net.decoder.bias.requires_grad_(False)


def _lr_at(step: int, total: int, base: float) -> float:
    warm = min(50, max(total // 20, 1))
    if step < warm:
        return base * (step + 1) / warm
    t = (step - warm) / max(total - warm, 1)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def _state_copy(net) -> dict:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _maybe_compile(net, cfg, device, log=None):
    """``torch.compile`` the network where it pays (CUDA by default); eager on failure."""
    if cfg.compile == "off" or (cfg.compile == "auto" and device.type != "cuda"):
        return net
    import torch

    try:
        return torch.compile(net, dynamic=False)
    except Exception as exc:  # noqa: BLE001 - no compiler toolchain, unsupported platform
        if log is not None:
            log(f"torch.compile unavailable ({type(exc).__name__}); running eagerly")
        return net


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


# --- one training run --------------------------------------------------------------------
def _run_training(data, cfg: FieldConfig, arch: dict, steps: int, device, *, phase: str,
                  should_stop=None, checkpoint=None, resume_state=None, step_offset=0, total_all=None,
                  t_start=None, meta_for_ckpt=None, on_status=None, phase_info=None):
    """Generator: trains one network; yields progress; returns (net, best_val, history, stopped, best_step).

    ``on_status(str)`` hears what the network is doing before its first step (initialisation);
    ``phase_info`` (dict) is merged into every progress record (which phase of how many)."""
    import copy

    import torch

    from .losses import AdamW, FeatureExtractor, kl_loss, pretrain_extractor, rc_loss, rmse
    from .model import build_net

    rank, world = _dist()
    if on_status is not None:
        on_status(f"{phase}: initialising the network (PCA start of the gene decoder)")
    torch.manual_seed(cfg.seed)
    net = build_net(arch)
    projected = bool(getattr(data, "projected", False))
    if projected:
        _fixed_decoder(net, data.basis)
    else:
        _pca_init(net, data.targets[data.train], arch["rank"], cfg.seed)
    net.to(device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    # data resident on the device
    T = torch.from_numpy(data.targets).to(device)
    xyz = torch.from_numpy(data.xyz).to(device)
    occ_xyz = torch.from_numpy(data.occ_xyz).to(device)
    occ_lab = torch.from_numpy(data.occ_lab).to(device)
    mean = torch.from_numpy(data.mean).to(device)
    std = torch.from_numpy(data.std).to(device)
    basis = torch.from_numpy(data.basis).to(device) if projected else None
    resid = torch.from_numpy(data.resid).to(device) if projected else None
    n_genes = int(data.n_genes)
    train_idx = torch.from_numpy(data.train).to(device)[rank::world]  # this process's share
    val_idx = torch.from_numpy(data.val).to(device)[rank::world]
    n_val_total = len(data.val)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1 + 7919 * rank)
    H = None
    if cfg.lambda_rc > 0:
        Hgen = torch.Generator(device=device).manual_seed(cfg.seed + 2)
        H = FeatureExtractor(n_genes, cfg.rc_dim).to(device)
        rows = np.random.default_rng(cfg.seed + 3).permutation(data.train)[:20000]
        ref = T[torch.from_numpy(np.sort(rows)).to(device)]
        pretrain_extractor(H, ref @ basis.T if projected else ref, steps=cfg.rc_pretrain_steps, generator=Hgen)
        del ref
    params = [p for p in net.parameters() if p.requires_grad]
    opt = AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, best_val, best_state, best_step, bad = 0, float("inf"), None, 0, 0
    history: list = []
    batch = int(cfg.batch_size)
    if resume_state is not None:
        net.load_state_dict(resume_state["net"])
        opt.load_state_dict(resume_state["opt"])
        start = int(resume_state["step"])
        best_val = float(resume_state["best_val"])
        best_state = resume_state.get("best_net") or None
        best_step = int(resume_state.get("best_step", 0))
        bad = int(resume_state.get("bad", 0))
        history = list(resume_state.get("history", []))
        gen.manual_seed(cfg.seed + 1 + 7919 * rank + start)
        batch = int(resume_state.get("batch", batch))
    # exponential moving average of the weights: validated, kept and returned (smoother, less variance)
    ema_net = copy.deepcopy(net) if cfg.ema > 0 else net
    if cfg.ema > 0 and resume_state is not None and resume_state.get("ema"):
        ema_net.load_state_dict(resume_state["ema"])
    ema_params = list(ema_net.parameters())
    net_params = list(net.parameters())
    model = net
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(net, device_ids=[device.index] if cuda else None)
    model = _maybe_compile(model, cfg, device)
    anneal = max(int(cfg.anneal_frac * steps), 0)
    has_alpha = hasattr(net.enc, "alpha")
    n_train = len(train_idx)
    n_occ = len(data.occ_xyz)
    t0 = time.perf_counter() if t_start is None else t_start
    t_run = time.perf_counter()
    total_all = total_all or steps
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else _nullctx()
    log_every = max(1, int(cfg.log_every))

    def set_alpha(step):
        if has_alpha:
            a = 1.0 if anneal == 0 else min(1.0, (step + 1) / anneal)
            net.enc.alpha.fill_(a)
            ema_net.enc.alpha.fill_(a)

    def update_ema(step):
        if cfg.ema <= 0:
            return
        d = min(cfg.ema, (1.0 + step) / (10.0 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, net_params, 1.0 - d)

    def sq_err(lat, pred, rows):
        """Sum over rows of the squared error over all genes (target space: centred, scaled by ``std``)."""
        if projected:
            return ((lat.float() - T[rows]) ** 2).sum() + resid[rows].sum()
        return ((pred.float() - T[rows]) ** 2).sum()

    def validate():
        if n_val_total == 0:
            return float("nan")
        ema_net.eval()
        err = torch.zeros((), device=device, dtype=torch.float64)
        with torch.no_grad():
            for s in range(0, len(val_idx), 16384):
                vi = val_idx[s:s + 16384]
                with amp:
                    lat, pred, _ = ema_net(xyz[vi], decode=not projected)
                err += sq_err(lat, pred, vi).double()
        if world > 1:
            import torch.distributed as dist

            dist.all_reduce(err)
        net.train()
        return math.sqrt(float(err) / (n_val_total * n_genes))

    def losses_of(lat, pred, rows, occ_logit, oi):
        parts = {}
        k = min(int(cfg.aux_batch), len(rows))  # the consistency and KL terms on the first k (random) rows
        if projected:
            lat = lat.float()
            parts["rec"] = torch.sqrt((((lat - T[rows]) ** 2).sum(1) + resid[rows]).mean() / n_genes + 1e-12)
            if H is not None or cfg.lambda_kl > 0:  # profiles in the PCA basis, for the auxiliary terms
                true, pred = T[rows[:k]] @ basis.T, lat[:k] @ basis.T
        else:
            pred = pred.float()
            true = T[rows]
            parts["rec"] = rmse(pred, true)
            true, pred = true[:k], pred[:k]
        if H is not None:
            parts["rc"] = rc_loss(H, pred, true)
        if cfg.lambda_kl > 0:
            parts["kl"] = kl_loss(pred * std + mean, true * std + mean)
        if cfg.lambda_occ > 0:
            parts["occ"] = torch.nn.functional.binary_cross_entropy_with_logits(occ_logit.float(), occ_lab[oi])
        loss = parts["rec"] + cfg.lambda_rc * parts.get("rc", 0.0) + cfg.lambda_kl * parts.get("kl", 0.0) \
            + cfg.lambda_occ * parts.get("occ", 0.0)
        return loss, parts

    stopped = False
    step = start
    last = {}
    acc = None  # running sums of the loss terms since the last report (on the device)
    acc_n = 0
    samples = 0
    while step < steps:
        if should_stop is not None and should_stop():
            stopped = True
            if checkpoint is not None and step > start and rank == 0:
                _save_checkpoint(checkpoint, net, opt, step, best_val, best_state, best_step, bad, history, batch,
                                 meta_for_ckpt, ema_net)
            break
        set_alpha(step)
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, steps, cfg.lr)
        b = min(batch, n_train)
        bi = train_idx[torch.randint(0, n_train, (b,), device=device, generator=gen)]
        oi = torch.randint(0, n_occ, (max(b // 2, 256),), device=device, generator=gen)
        try:
            with amp:
                lat, pred, occ_logit = model(xyz[bi], occ_xyz[oi], decode=not projected)
            loss, parts = losses_of(lat, pred, bi, occ_logit, oi)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            update_ema(step)
        except torch.cuda.OutOfMemoryError:
            opt.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            if batch <= 64 or world > 1:
                raise
            batch //= 2
            continue
        step += 1
        samples += b
        vec = torch.stack([loss.detach(), *[v.detach() for v in parts.values()]])
        acc = vec if acc is None else acc + vec
        acc_n += 1
        val = None
        if step % cfg.val_every == 0 or step == steps:
            val = validate()
            if not math.isnan(val) and val < best_val - 1e-5:
                best_val, best_state, best_step, bad = val, _state_copy(ema_net), step, 0
            elif step >= anneal:
                bad += 1
        report = val is not None or step % log_every == 0 or step == steps
        if report:
            means = (acc / acc_n).tolist()  # the one host sync of the interval
            acc, acc_n = None, 0
            rec = {"step": step, "t": round(time.perf_counter() - t0, 3), "loss": means[0],
                   **dict(zip(parts, means[1:])),
                   "samples_per_s": round(samples * world / max(time.perf_counter() - t_run, 1e-9), 1)}
            if val is not None:
                rec["val"] = val
            history.append(rec)
        if checkpoint is not None and cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and rank == 0:
            _save_checkpoint(checkpoint, net, opt, step, best_val, best_state, best_step, bad, history, batch,
                             meta_for_ckpt, ema_net)
        if report:
            elapsed = time.perf_counter() - t0
            done = step_offset + step
            last = {"step": done, "total": total_all, "loss": rec["loss"],
                    "losses": {k: rec[k] for k in parts}, "val": val,
                    "best_val": best_val if best_val < float("inf") else None,
                    "eta_s": elapsed / max(done - start, 1) * (total_all - done),
                    "samples_per_s": rec["samples_per_s"],
                    "phase": phase, "phase_start": step_offset, "phase_steps": steps, **(phase_info or {}),
                    "net": ema_net}  # the live network (for previews; do not keep)
            yield last
        if n_val_total and bad >= cfg.patience and step >= anneal:
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    elif ema_net is not net:
        net.load_state_dict(ema_net.state_dict())
    if has_alpha:
        net.enc.alpha.fill_(1.0 if anneal == 0 else min(1.0, best_step / max(anneal, 1)) if best_step else 1.0)
    if best_val == float("inf") and n_val_total:
        best_val = validate()
    if world > 1:
        # release the DistributedDataParallel wrapper (and its gloo/NCCL hooks) now, closures
        # included, not at interpreter exit after the process group is gone (an abort there)
        model = None  # noqa: F841
        import gc

        gc.collect()
    return net, best_val, history, stopped, best_step


def _save_checkpoint(path, net, opt, step, best_val, best_state, best_step, bad, history, batch, meta, ema=None):
    import torch

    from ..io.atomic import atomic_path

    obj = {"format": "napari-inrst-checkpoint", "net": net.state_dict(), "opt": opt.state_dict(), "step": step,
           "best_val": float(best_val), "best_net": best_state or {}, "best_step": int(best_step), "bad": int(bad),
           "history": history[-2000:], "batch": int(batch), "meta": meta or {},
           "ema": ema.state_dict() if ema is not None and ema is not net else {}}
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path) -> dict:
    """Read a training checkpoint (``torch.load(weights_only=True)``: no code runs)."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(path, "checkpoint not found") from None
    except Exception as exc:
        raise InputError(path, f"not a readable napari-inrst checkpoint ({str(exc).splitlines()[0][:160]})") from None
    if not isinstance(obj, dict) or obj.get("format") != "napari-inrst-checkpoint":
        raise InputError(path, "not a napari-inrst checkpoint")
    return obj


def _stack_meta(stack, data) -> dict:
    return {
        "names": list(stack.names),
        "z": [float(v) for v in stack.z],
        "transforms": [np.asarray(m, dtype=float).tolist() for m in stack.transforms()],
        "sources": [s.source for s in stack.sections],
        "training_sections": list(data.idx),
        "spot_spacing_um": data.spacing,
        "z_spacing_um": data.z_spacing,
        "unit_factor": float(getattr(stack, "unit_factor", 1.0)),
        "gene_policy": getattr(stack, "gene_policy", ""),
        "targets": "projected" if getattr(data, "projected", False) else "dense",
        "n_cells": int(data.n),
    }


def iter_fit(stack, config: FieldConfig | None = None, *, sections: Iterable[int] | None = None,
             progress: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None,
             checkpoint=None, resume=None, on_status: Callable[[str], None] | None = None):
    """Train a field on ``stack`` (generator; yields progress dicts, returns the FieldModel).

    ``stack`` is a :class:`~napari_inrst.stack.SectionStack` or a lazily read
    :class:`~napari_inrst.io.lazy.LazyStack` (trained on projected targets). ``on_status(str)``
    hears what happens between progress records (reading the data, initialising a network), so a
    GUI can say so instead of a silent "Preparing…".

    Every progress record carries ``total``: the steps planned for the whole fit, fixed from the
    first record (wavelength probes + ensemble members × steps), and ``phase``,
    ``phase_index``/``n_phases``, ``phase_start``/``phase_steps``: a phase that stops early
    (no validation improvement) leaves the rest of its steps unused, so ``step`` jumps to the next
    phase's start.
    """
    import torch

    cfg = (config or FieldConfig()).replace().validate()
    t0 = time.perf_counter()
    device = select_device(cfg.device)
    rank, _ = _dist()
    if device.type == "cuda" and torch.distributed.is_available() and torch.distributed.is_initialized():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)) % max(torch.cuda.device_count(), 1))
    resume_state = None
    if resume is not None:
        resume_state = load_checkpoint(resume)
        m = resume_state.get("meta", {})
        if m.get("genes") is not None and list(m["genes"]) != list(stack.genes):
            raise InputError(resume, "checkpoint was trained on other genes than this stack")
        if m.get("config"):
            cfg = FieldConfig.from_dict(m["config"])
    cfg = cfg.replace(standardize=cfg.resolved_standardize(stack.n_genes))  # stored resolved
    t_read = time.perf_counter()
    if on_status is not None:
        on_status(f"reading the training data: {stack.n_genes} genes")
    data = choose_data(stack, cfg, sections)
    data.read_seconds = time.perf_counter() - t_read
    if on_status is not None:
        kind = "projected" if getattr(data, "projected", False) else "dense"
        on_status(f"data ready: {len(data.train)} training cells × {data.n_genes} genes ({kind} targets, "
                  f"{data.read_seconds:.1f} s)")
    old_threads = torch.get_num_threads()
    threads = old_threads
    if device.type == "cpu":
        threads = _cpu_threads(cfg.threads)
        torch.set_num_threads(threads)
    try:
        model = yield from _iter_fit_body(stack, cfg, data, device, threads, resume_state, progress, should_stop,
                                          checkpoint, t0, on_status)
    finally:
        torch.set_num_threads(old_threads)
    return model


def _iter_fit_body(stack, cfg, data, device, threads, resume_state, progress, should_stop, checkpoint, t0,
                   on_status=None):
    import copy

    import torch

    from .. import __version__
    from .model import FieldModel

    wl_z = cfg.min_wavelength_z_um or (2.5 * data.z_spacing if data.z_spacing else 1e6)
    stack_meta = _stack_meta(stack, data)
    floor = data.X_raw_min if data.X_raw_min >= 0 else None

    def make_model(net, arch, cfg_, prov=None, history=None, copy_net=True):
        net = getattr(net, "_orig_mod", net)  # a compiled network's module
        net = copy.deepcopy(net) if copy_net else net
        net = net.float().cpu().eval()
        for p in net.parameters():
            p.requires_grad_(False)
        return FieldModel(net, genes=stack.genes, mean=data.mean, std=data.std, arch=arch, config=cfg_,
                          normalize=stack.normalize, stack_meta=stack_meta, bounds=(data.lo, data.hi),
                          provenance=prov, history=history, value_floor=floor)

    wl_xy = cfg.min_wavelength_xy_um
    probe_log = []
    step_offset = 0
    best_probe = None  # (val, wavelength, net, arch, history, best_step)
    stopped = False
    steps_run = 0  # steps actually taken, every network of every phase together
    k_members = int(cfg.ensemble) if cfg.ensemble > 0 else (ENSEMBLE_SMALL if len(data.train) < SMALL_DATA else 1)
    if resume_state is not None:
        k_members = 1
    cands = []
    if wl_xy is None and cfg.encoding == "fourier" and resume_state is None:
        cands = [float(c) * data.spacing for c in cfg.wavelength_candidates]
        if len(cands) == 1:
            wl_xy, cands = cands[0], []
    # short probe runs; shorter still on large data, where the candidates rank early and each
    # step sees only a small fraction of the cells anyway
    frac = PROBE_FRAC if len(data.train) < LARGE_DATA else PROBE_FRAC_LARGE
    probe_steps = max(int(frac * cfg.steps), 2 * cfg.val_every) if cands else 0
    # the whole plan is known before the first step: the total never changes during the fit
    total = probe_steps * len(cands) + k_members * cfg.steps
    n_phases = len(cands) + k_members
    if cands:
        pcfg = cfg.replace(patience=max(2, cfg.patience // 2), checkpoint_every=0)
        for j, c in enumerate(cands):
            arch_c = data.arch(cfg, c, wl_z)
            gen = _run_training(data, pcfg, arch_c, probe_steps, device, phase=f"probe λxy={c:.0f}µm",
                                should_stop=should_stop, step_offset=step_offset, total_all=total, t_start=t0,
                                on_status=on_status, phase_info={"phase_index": j, "n_phases": n_phases,
                                                                 "kind": "selection"})
            net_c, v, hist_c, stopped, bstep = yield from _forward(
                gen, progress, lambda n, a=arch_c, w=c: make_model(n, a, cfg.replace(min_wavelength_xy_um=w,
                                                                                  min_wavelength_z_um=wl_z)))
            steps_run += hist_c[-1]["step"] if hist_c else 0
            probe_log.append({"min_wavelength_xy_um": c, "val": v})
            if best_probe is None or v < best_probe[0]:
                best_probe = (v, c, net_c, arch_c, hist_c, bstep)
            step_offset += probe_steps
            if stopped:
                break
        wl_xy = best_probe[1]
    if wl_xy is None:
        wl_xy = data.spacing
    cfg = cfg.replace(min_wavelength_xy_um=float(wl_xy), min_wavelength_z_um=float(wl_z),
                      rank=int(data.rank_for(cfg)))
    kept = "fit"
    if stopped and best_probe is not None:  # cancelled while choosing the scale: keep the best probe
        _, _, net, arch, history, best_step = best_probe
        best_val, stopped2 = best_probe[0], True
        kept = f"best probe (λxy={best_probe[1]:.0f} µm)"
    elif k_members > 1:  # small data: an ensemble of fields (different seeds) averaged → less variance
        nets, vals, history, stopped2, best_step = [], [], [], False, 0
        member_steps = []
        for k in range(k_members):
            mcfg = cfg.replace(seed=cfg.seed + 1000 * k)
            arch_k = data.arch(mcfg, wl_xy, wl_z)
            gen = _run_training(data, mcfg, arch_k, cfg.steps, device, phase=f"fit {k + 1}/{k_members}",
                                should_stop=should_stop, step_offset=step_offset, total_all=total, t_start=t0,
                                on_status=on_status, phase_info={"phase_index": len(cands) + k,
                                                                 "n_phases": n_phases, "kind": "members"})
            net_k, v, hist_k, stopped2, bstep_k = yield from _forward(
                gen, progress, lambda n, a=arch_k: make_model(n, a, cfg))
            member_steps.append(hist_k[-1]["step"] if hist_k else 0)
            steps_run += member_steps[-1]
            nets.append(net_k)
            vals.append(v)
            best_step = bstep_k
            history += [dict(h, step=h["step"] + step_offset) for h in hist_k]
            step_offset += cfg.steps
            if stopped2:
                break
        if stopped2:
            # cancelled during a member: keep what validates best of the best probe, the members
            # finished so far (averaged) and the interrupted member on its own
            done_vals = vals[:-1]
            options = [(vals[-1], "interrupted")]
            if done_vals:
                options.append((float(np.mean(done_vals)), "finished"))
            if best_probe is not None:
                options.append((best_probe[0], "probe"))
            pick = min(options, key=lambda o: o[0] if math.isfinite(o[0]) else float("inf"))[1]
            if pick == "finished":
                nets, vals = nets[:-1], vals[:-1]
            elif pick == "probe":
                nets, vals = [], []
        from .model import build_net

        if not nets:  # the best probe is better than anything the members reached
            _, _, net, arch, _, best_step = best_probe
            best_val = best_probe[0]
            kept = f"best probe (λxy={best_probe[1]:.0f} µm)"
        else:
            arch = dict(data.arch(cfg, wl_xy, wl_z), members=len(nets))
            net = build_net(arch) if len(nets) > 1 else nets[0]
            if len(nets) > 1:
                for m, n in zip(net.members, nets):
                    m.load_state_dict(n.state_dict())
                net.combine()
            else:
                arch = data.arch(cfg, wl_xy, wl_z)
            best_val = float(np.mean(vals))
            kept = f"ensemble of {len(nets)} members" if len(nets) > 1 else "1 member"
    else:
        arch = data.arch(cfg, wl_xy, wl_z)
        meta_ck = {"genes": list(stack.genes), "config": cfg.to_dict()}
        gen = _run_training(data, cfg, arch, cfg.steps, device, phase="fit", should_stop=should_stop,
                            checkpoint=checkpoint, resume_state=resume_state, step_offset=step_offset,
                            total_all=total, t_start=t0, meta_for_ckpt=meta_ck, on_status=on_status,
                            phase_info={"phase_index": len(cands), "n_phases": n_phases, "kind": "fit"})
        net, best_val, history, stopped2, best_step = yield from _forward(
            gen, progress, lambda n: make_model(n, arch, cfg))
        start = int(resume_state["step"]) if resume_state is not None else 0
        steps_run += (history[-1]["step"] - start) if history else 0
        if stopped2 and best_probe is not None and best_probe[0] < best_val:
            _, _, net, arch, _, best_step = best_probe
            best_val = best_probe[0]
            kept = f"best probe (λxy={best_probe[1]:.0f} µm)"
    rank, world = _dist()
    prov = {
        "napari_inrst": __version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "inputs": [s.source for s in stack.sections],
        "torch": torch.__version__,
        "device": str(device) if device.type != "cuda" else f"{device} ({torch.cuda.get_device_name(device)})",
        "threads": threads,
        "processes": world,
        "fit_seconds": round(time.perf_counter() - t0, 2),
        "steps_run": history[-1]["step"] if history else 0,
        "members": int(arch.get("members", 1)),
        "best_step": best_step,
        "val_rmse": best_val,
        "targets": stack_meta["targets"],
        "read_seconds": round(float(getattr(data, "read_seconds", 0.0)), 2),
        "samples_per_s": float(np.median([h["samples_per_s"] for h in history[-5:]])) if history else 0.0,
        "probes": probe_log,
        "cancelled": bool(stopped2),
        "steps_planned": int(total),
        "steps_total_run": int(steps_run),
        "kept": kept,
    }
    if getattr(data, "projected", False):
        prov["pca_explained_variance"] = round(data.explained, 4)
    return make_model(net, arch, cfg, prov, history, copy_net=False)


def _forward(gen, progress, snapshot=None):
    """``yield from`` a training generator: progress dicts get a ``snapshot()`` (a FieldModel of
    the weights at that moment; call it from the training thread) and go to ``progress``."""
    while True:
        try:
            item = next(gen)
        except StopIteration as stop:
            return stop.value
        net = item.pop("net", None)
        if snapshot is not None and net is not None:
            item["snapshot"] = (lambda n=net: snapshot(n))
        if progress is not None:
            progress(item)
        yield item


def fit_field(stack, config: FieldConfig | None = None, *, sections=None, progress=None, should_stop=None,
              checkpoint=None, resume=None):
    """Train a field on ``stack.sections[i] for i in sections`` (default: the non-excluded ones).

    ``progress(dict)`` is called with each progress record; ``should_stop()`` returning True ends
    training early (the best weights so far are kept); ``checkpoint`` is a path written every
    ``config.checkpoint_every`` steps; ``resume`` a checkpoint to continue from.
    """
    gen = iter_fit(stack, config, sections=sections, progress=progress, should_stop=should_stop,
                   checkpoint=checkpoint, resume=resume)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
