"""Training the expression field on a section stack.

:func:`iter_fit` is a generator (for napari's ``thread_worker``): it yields progress dicts
``{step, total, loss, losses: {...}, val, best_val, eta_s, phase, samples_per_s}`` and returns the
:class:`~.model.FieldModel` (``StopIteration.value``). :func:`fit_field` runs it to the end with
an optional ``progress`` callback and ``should_stop`` predicate.

What makes the field generalize instead of memorizing single cells, and what keeps it honest:

* validation mimics the task: with three or more sections, whole interior sections are held out
  (:meth:`~.data.StackData.task_split`) — the fit is judged on predicting sections it never saw,
  not on random spots of the sections it trains on; with one or two sections, held-out spots;
* a *selection* run on that split early-stops (the weights with the best validation error are
  kept); the frequencies of the Fourier encoding open coarse-to-fine during the first part of
  training, so the stopping step also chooses how fine a field the data support; the *final*
  run repeats the schedule on every training cell up to the selected step;
* the field is a blend (1 − w) · network + w · interpolant (IDW of the 5 nearest training cells
  in 3D, the 4 nearest in 2D for one section — the baselines of EVALUATION.md), w chosen on the
  validation split: where the network does not beat interpolation the model leans on the
  interpolant instead of ringing off the support of the data;
* every length is relative to the data's own spacings (unit-free);
* the latent is low-rank and the gene decoder starts from PCA of the data.

The scores of the network, the blend and interpolation on the validation split are stored with
the model (``FieldModel.validation``; :mod:`.report` formats them).

Speed: the data live on the training device; batches are drawn there (a device generator); the
loop never waits on the device except every ``log_every`` steps (progress) and at validation.
On CUDA: TF32 matmuls, bf16 autocast, ``torch.compile`` of the network (``config.compile``).
Large stacks train on projected targets (:class:`~.data.ProjectedData`, streamed from disk).
When ``torch.distributed`` is initialized with more than one process (``torchrun``, see
:mod:`napari_inrst.cli.distributed`), the network is wrapped in DistributedDataParallel: every process
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
from .data import choose_data

LARGE_DATA = 200_000  # training cells above which a held-out-spots fit keeps its selection network


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
    unit variance), bias ← the mean profile. Randomized subspace iteration on (a subsample of)
    the centred data (:func:`~napari_inrst.stack.linalg.top_components`): never the genes × genes
    covariance, so thousands of genes cost seconds, not minutes."""
    import torch

    from ..stack.linalg import top_components

    rng = np.random.default_rng(seed)
    sub = Xs if len(Xs) <= 8000 else Xs[rng.choice(len(Xs), 8000, replace=False)]
    sub = np.asarray(sub, dtype=np.float64)
    sub = sub - sub.mean(0)
    r = min(rank, sub.shape[1])
    evals, evecs = top_components(sub, r, rng)
    W = np.zeros((Xs.shape[1], rank), dtype=np.float64)
    W[:, :r] = evecs * np.sqrt(evals)[None, :]
    with torch.no_grad():
        net.decoder.weight.copy_(torch.from_numpy(W).float())
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
                  t_start=None, meta_for_ckpt=None, rows=None, stop_at=None, on_status=None, phase_info=None):
    """Generator: trains one network; yields progress; returns (net, best_val, history, stopped, best_step).

    ``rows``: (train, val) row indices (default ``data.train``, ``data.val``); an empty ``val``
    trains without validation and keeps the last weights. ``stop_at``: stop after this step of a
    ``steps``-step schedule (learning rate and coarse-to-fine window as for ``steps``).
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
        _pca_init(net, data.targets[data.train if rows is None else rows[0]], arch["rank"], cfg.seed)
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
    tr_rows, va_rows = (data.train, data.val) if rows is None else rows
    tr_rows = np.asarray(tr_rows, dtype=np.int64)
    va_rows = np.asarray(va_rows, dtype=np.int64)
    train_idx = torch.from_numpy(tr_rows).to(device)[rank::world]  # this process's share
    val_idx = torch.from_numpy(va_rows).to(device)[rank::world]
    n_val_total = len(va_rows)
    end = int(steps if stop_at is None else max(1, min(int(stop_at), steps)))
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1 + 7919 * rank)
    H = None
    if cfg.lambda_rc > 0:
        Hgen = torch.Generator(device=device).manual_seed(cfg.seed + 2)
        H = FeatureExtractor(n_genes, cfg.rc_dim).to(device)
        ref_rows = np.random.default_rng(cfg.seed + 3).permutation(tr_rows)[:20000]
        ref = T[torch.from_numpy(np.sort(ref_rows)).to(device)]
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
    while step < end:
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
        if n_val_total and (step % cfg.val_every == 0 or step == end):
            val = validate()
            if not math.isnan(val) and val < best_val - 1e-5:
                best_val, best_state, best_step, bad = val, _state_copy(ema_net), step, 0
            elif step >= anneal:
                bad += 1
        report = val is not None or step % log_every == 0 or step == end
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
    if not n_val_total:
        best_step = step  # no validation: the last weights, and the window as it was then
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
    meta = {
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
    defs = [getattr(s, "deformation", None) for s in stack.sections]
    if any(d is not None for d in defs):  # the sections' smooth warps (napari_inrst.align.deform)
        from ..align.deform import deformations_json

        meta["deformation"] = deformations_json(stack.names, defs)
    return meta


def iter_fit(stack, config: FieldConfig | None = None, *, sections: Iterable[int] | None = None,
             progress: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None,
             checkpoint=None, resume=None, on_status: Callable[[str], None] | None = None):
    """Train a field on ``stack`` (generator; yields progress dicts, returns the FieldModel).

    ``stack`` is a :class:`~napari_inrst.stack.SectionStack` or a lazily read
    :class:`~napari_inrst.stack.lazy.LazyStack` (trained on projected targets). ``on_status(str)``
    hears what happens between progress records (reading the data, initialising a network), so a
    GUI can say so instead of a silent "Preparing…".

    Every progress record carries ``total``: the steps planned for the whole fit, fixed from the
    first record (the selection run's ``steps`` + ``steps`` for each network of the final run),
    and ``phase``, ``kind`` ("selection", "final", or "members" for an ensemble's networks),
    ``phase_index``/``n_phases``, ``phase_start``/``phase_steps``: a phase that stops early
    (selection: no validation improvement; final: at the selected step) leaves the rest of its
    steps unused, so ``step`` jumps to the next phase's start.
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


#: finest Fourier wavelengths, in units of the data's own spacings (unit-free): x/y × the spot
#: spacing, z × the section spacing (Nyquist: 2 × the spacing is the finest z pattern sections
#: can show). The coarse-to-fine window and early stopping on the task's validation choose how
#: much of that band a fit uses.
XY_WAVELENGTH = 2.0
Z_WAVELENGTH = 2.5
#: blend weights tried on the validation split (w of the interpolant)
BLEND_GRID = tuple(np.round(np.linspace(0.0, 1.0, 21), 3))
#: genes the validation score is computed on (the most expressed), like EVALUATION.md's sparse-count rule
SCORE_GENES = 200
#: interpolant basis: at most this many components, and at most this many stored numbers (cells × q)
INTERP_RANK = 256
INTERP_VALUES = 50_000_000


def _score_genes(data) -> np.ndarray:
    g = np.argsort(-np.asarray(data.mean, dtype=np.float64), kind="stable")[:SCORE_GENES]
    return np.sort(g)


def _gene_rows(data, rows, genes) -> np.ndarray:
    """Targets (centred, ÷ std) of ``rows`` at ``genes`` (projected data: through the basis)."""
    if getattr(data, "projected", False):
        return data.targets[rows] @ data.basis[genes].T
    return data.targets[rows][:, genes]


def _interp_basis(data, rows, seed: int):
    """(basis genes × q, coefficients of ``rows``) of the interpolant: the PCA basis of projected
    targets, else the top components of the training targets (all of them for ≤ INTERP_RANK genes)."""
    if getattr(data, "projected", False):
        return data.basis, data.targets[rows]
    from ..stack.linalg import top_components

    G = data.n_genes
    q = int(min(G, INTERP_RANK, len(rows), max(16, INTERP_VALUES // max(len(rows), 1))))
    X = data.targets[rows]
    if q >= G:
        V = np.eye(G, dtype=np.float32)
    else:
        sub = X if len(X) <= 20000 else X[np.random.default_rng(seed).choice(len(X), 20000, replace=False)]
        _, V = top_components(np.asarray(sub, dtype=np.float64), q, np.random.default_rng(seed + 5))
        V = V.astype(np.float32)
    return V, (X @ V).astype(np.float32)


def _net_gene_rows(net, data, xyz, genes) -> np.ndarray:
    """The network's targets at ``xyz`` for ``genes`` (numpy, CPU, in chunks)."""
    import torch

    net = getattr(net, "_orig_mod", net)
    W = net.decoder.weight.detach().float().cpu().numpy()[genes]
    b = net.decoder.bias.detach().float().cpu().numpy()[genes]
    dev = next(net.parameters()).device
    out = []
    with torch.inference_mode():
        for s0 in range(0, len(xyz), 16384):
            lat = net.latent(torch.from_numpy(np.ascontiguousarray(xyz[s0:s0 + 16384])).to(dev)).float().cpu().numpy()
            out.append(lat @ W.T + b)
    return np.concatenate(out) if out else np.zeros((0, len(genes)), np.float32)


def _validation_report(net, data, task, tr, va, pos, names, cfg) -> dict:
    """Score the network, the interpolant and their blends on the validation split; choose the
    blend weight. Scores: per-gene Pearson over the held-out cells (the most expressed genes)."""
    from ..measure.baselines import idw
    from ..measure.metrics import pearson_per_gene

    dims = 3 if data.z_spacing is not None else 2
    k = 5 if dims == 3 else 4
    genes = _score_genes(data)
    truth = _gene_rows(data, va, genes)
    qxyz = data.xyz[va].astype(np.float64)[:, :dims]
    txyz = data.xyz[tr].astype(np.float64)[:, :dims]
    f = _net_gene_rows(net, data, data.xyz[va], genes)
    base = idw(txyz, _gene_rows(data, tr, genes), qxyz, k)  # knn3d / knn2d on the scored genes, exactly
    V, coef = _interp_basis(data, tr, cfg.seed)
    ip = idw(txyz, coef, qxyz, k) @ V[genes].T  # the interpolant as the model stores it
    grid = BLEND_GRID if cfg.blend else (0.0, 1.0)
    scores = {float(w): pearson_per_gene(truth, (1.0 - w) * f + w * ip) for w in grid}
    best_w = max(scores, key=lambda w: (round(scores[w], 4), -w)) if cfg.blend else 0.0  # ties: the smaller w
    inter = pearson_per_gene(truth, base)
    field = scores[best_w]
    return {
        "task": task,
        "metric": f"per-gene Pearson over the held-out {'cells' if task.endswith('sections') else 'spots'}, "
                  f"{len(genes)} most expressed genes",
        "sections": [names[p] for p in pos],
        "n_cells": int(len(va)),
        "genes_scored": int(len(genes)),
        "field": round(float(field), 4),
        "network": round(float(scores[0.0]), 4),
        "interpolation": round(float(inter), 4),
        "interpolant_stored": round(float(scores[1.0]), 4),
        "baseline": "knn3d" if dims == 3 else "knn2d",
        "blend_weight": float(best_w),
        "better": bool(field > inter),
    }


def _iter_fit_body(stack, cfg, data, device, threads, resume_state, progress, should_stop, checkpoint, t0,
                   on_status=None):
    """Selection then final fit.

    1. *Selection*: one network trained on the validation split that mimics the task
       (:meth:`~.data.StackData.task_split`: whole interior sections held out when there are
       three or more sections, else held-out spots), early-stopped on it. It fixes the number of
       steps (and with it how far the coarse-to-fine window opened), and on its predictions of
       the held-out cells the blend weight w of (1 − w) · network + w · interpolant (3D kNN, or
       2D kNN for one section) is chosen. The scores of the network, the blend and plain
       interpolation on that split are the model's ``validation`` report.
    2. *Final*: the same schedule on every training cell, stopped at the selected step; the
       interpolant over every training cell is attached with the chosen weight.

    The plan (``total``) is fixed before the first step: ``steps`` for the selection, ``steps``
    per network of the final run (which stops at the selected step ≤ ``steps``). Cancel while
    selecting keeps the selection network's best weights so far; Cancel during the final run
    keeps the finished final networks if any, else the validated selection network (complete,
    and scored by the validation report), not a half-trained final one.
    """
    import copy

    import torch

    from .. import __version__
    from .model import FieldModel, Interpolant, build_net

    sp = float(data.spacing)
    wl_z = cfg.min_wavelength_z_um or (Z_WAVELENGTH * data.z_spacing if data.z_spacing else sp)
    wl_xy = cfg.min_wavelength_xy_um or XY_WAVELENGTH * sp
    cfg = cfg.replace(min_wavelength_xy_um=float(wl_xy), min_wavelength_z_um=float(wl_z),
                      rank=int(data.rank_for(cfg)))
    stack_meta = _stack_meta(stack, data)
    floor = data.X_raw_min if data.X_raw_min >= 0 else None
    names = [stack.names[i] for i in data.idx]

    def make_model(net, arch, cfg_, prov=None, history=None, copy_net=True, interp=None, validation=None):
        net = getattr(net, "_orig_mod", net)  # a compiled network's module
        net = copy.deepcopy(net) if copy_net else net
        net = net.float().cpu().eval()
        for p in net.parameters():
            p.requires_grad_(False)
        return FieldModel(net, genes=stack.genes, mean=data.mean, std=data.std, arch=arch, config=cfg_,
                          normalize=stack.normalize, stack_meta=stack_meta, bounds=(data.lo, data.hi),
                          provenance=prov, history=history, value_floor=floor, interp=interp,
                          validation=validation)

    k_members = max(1, int(cfg.ensemble))
    if checkpoint is not None and k_members > 1:
        raise InputError(checkpoint, "checkpoints are written for single-network fits only; "
                                     f"this config averages {k_members} networks (ensemble)")
    arch = data.arch(cfg, wl_xy, wl_z)
    task, tr, va, pos = data.task_split(cfg)
    ck_meta = resume_state.get("meta", {}) if resume_state is not None else {}
    sel = ck_meta.get("selection") if ck_meta.get("phase") == "final" else None
    all_rows = np.arange(data.n)
    final_needed = cfg.final_fit and (len(data.train) + len(data.val) < LARGE_DATA or task != "held-out spots")
    # the whole plan is known before the first step: the total never changes during the fit
    n_final = k_members if final_needed else 0
    total = cfg.steps * (1 + n_final)
    n_phases = 1 + n_final
    history: list = []
    stopped = False
    net_sel = None
    steps_run = 0  # steps actually taken in this call, every network together
    if sel is None:
        meta_ck = {"genes": list(stack.genes), "config": cfg.to_dict(), "phase": "select"}
        gen = _run_training(data, cfg, arch, cfg.steps, device, phase="select", should_stop=should_stop,
                            checkpoint=checkpoint, resume_state=resume_state, total_all=total, t_start=t0,
                            meta_for_ckpt=meta_ck, rows=(tr, va), on_status=on_status,
                            phase_info={"phase_index": 0, "n_phases": n_phases, "kind": "selection"})
        net_sel, best_val, hist_s, stopped, best_step = yield from _forward(
            gen, progress, lambda n: make_model(n, arch, cfg))
        history += hist_s
        sel_start = int(resume_state["step"]) if resume_state is not None else 0
        sel_steps = hist_s[-1]["step"] if hist_s else sel_start
        steps_run += sel_steps - sel_start
        sel = _validation_report(net_sel, data, task, tr, va, pos, names, cfg)
        sel.update(best_step=int(best_step), val_rmse=float(best_val), selection_steps=int(sel_steps),
                   selection_seconds=round(time.perf_counter() - t0, 2))
    best_step = int(sel["best_step"])
    step_offset = cfg.steps  # the final run's planned start (the selection may have stopped early)
    nets = []
    fit_rows = all_rows
    if stopped or not final_needed:  # cancelled while selecting, or large data with held-out spots
        nets = [net_sel]
        fit_rows = tr
        kept = ("selection network (best validated weights so far)" if stopped
                else "selection network (no final run: " + ("final_fit off)" if not cfg.final_fit else "large data)"))
    else:
        stop_at = max(best_step, 1)
        resuming_final = ck_meta.get("phase") == "final"
        for k in range(k_members):
            mcfg = cfg.replace(seed=cfg.seed + 1000 * k)
            arch_k = data.arch(mcfg, wl_xy, wl_z)
            meta_ck = {"genes": list(stack.genes), "config": cfg.to_dict(), "phase": "final", "selection": sel}
            rs = resume_state if resuming_final else None
            gen = _run_training(data, mcfg, arch_k, cfg.steps, device, phase="fit" if k_members == 1 else
                                f"fit {k + 1}/{k_members}", should_stop=should_stop,
                                checkpoint=checkpoint if k_members == 1 else None, resume_state=rs,
                                step_offset=step_offset, total_all=total, t_start=t0, meta_for_ckpt=meta_ck,
                                rows=(all_rows, all_rows[:0]), stop_at=stop_at, on_status=on_status,
                                phase_info={"phase_index": 1 + k, "n_phases": n_phases,
                                            "kind": "final" if k_members == 1 else "members"})
            net_k, _, hist_k, stopped_k, _ = yield from _forward(
                gen, progress, lambda n, a=arch_k: make_model(n, a, cfg))
            start_k = int(rs["step"]) if rs is not None else 0
            steps_run += (hist_k[-1]["step"] if hist_k else start_k) - start_k
            history += [dict(h, step=h["step"] + step_offset) for h in hist_k]
            step_offset += cfg.steps
            if stopped_k:
                stopped = True
                break
            nets.append(net_k)
        if not stopped:
            kept = "final fit" if k_members == 1 else f"final fit, ensemble of {k_members} networks"
        elif nets:  # cancelled during a later member: the finished ones are complete final networks
            kept = f"final fit, {len(nets)} of {k_members} ensemble networks (cancelled)"
        elif net_sel is not None:  # cancelled during the final run: the validated selection network
            nets, fit_rows = [net_sel], tr
            kept = "selection network (validated; final run cancelled)"
        else:  # resumed final run cancelled again: the selection network is not in the checkpoint
            nets = [net_k]
            kept = "final fit (interrupted; the selection network was not in the checkpoint)"
    if len(nets) > 1:
        arch = dict(arch, members=len(nets))
        net = build_net(arch)
        for m, n in zip(net.members, nets):
            m.load_state_dict(n.state_dict())
        net.combine()
    else:
        net = nets[0]
    interp = None
    if sel["blend_weight"] > 0:
        V, coef = _interp_basis(data, fit_rows, cfg.seed)
        dims = 3 if data.z_spacing is not None else 2
        interp = Interpolant(data.xyz[fit_rows], coef, V, sel["blend_weight"], k=5 if dims == 3 else 4, dims=dims)
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
        "selection_seconds": sel.get("selection_seconds"),
        "steps_run": history[-1]["step"] if history else 0,
        "members": len(nets),
        "best_step": best_step,
        "val_rmse": sel.get("val_rmse"),
        "targets": stack_meta["targets"],
        "read_seconds": round(float(getattr(data, "read_seconds", 0.0)), 2),
        "samples_per_s": float(np.median([h["samples_per_s"] for h in history[-5:]])) if history else 0.0,
        "blend_weight": sel["blend_weight"],
        "cancelled": bool(stopped),
        "steps_planned": int(total),
        "steps_total_run": int(steps_run),
        "kept": kept,
    }
    if getattr(data, "projected", False):
        prov["pca_explained_variance"] = round(data.explained, 4)
    validation = {k: v for k, v in sel.items() if k not in ("val_rmse", "selection_seconds", "selection_steps")}
    return make_model(net, arch, cfg, prov, history, copy_net=False, interp=interp, validation=validation)


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
