"""Training the expression field on a section stack.

:func:`iter_fit` is a generator (for napari's ``thread_worker``): it yields progress dicts
``{step, total, loss, losses: {...}, val, best_val, eta_s, phase}`` and returns the
:class:`~.model.FieldModel` (``StopIteration.value``). :func:`fit_field` runs it to the end with
an optional ``progress`` callback and ``should_stop`` predicate.

What makes the field generalize instead of memorizing single cells:

* validation spots (``val_frac`` of each training section, fixed by the seed) are held out; the
  weights with the best validation error are kept (early stopping with patience);
* the finest x/y wavelength of the Fourier encoding is chosen by validation: short probe runs for
  each candidate (multiples of the spot spacing), then the full run at the best one; the finest
  z wavelength follows the section spacing (z is sampled far more sparsely than x, y);
* frequencies open coarse-to-fine during the first part of training;
* the latent is low-rank and the gene decoder starts from PCA of the training data.
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from typing import Callable, Iterable

import numpy as np

from ..errors import InputError
from .config import FieldConfig


# --- helpers without torch ---------------------------------------------------------------
def _spacing(stack, idx) -> float:
    from ..stack import estimate_spacing

    return float(np.median([estimate_spacing(stack.sections[i].xy) for i in idx]))


def _z_spacing(z: np.ndarray) -> float | None:
    u = np.unique(np.asarray(z, dtype=np.float64))
    if len(u) < 2:
        return None
    return float(np.median(np.diff(u)))


def _occupancy_samples(stack, idx, spacing: float, lo, hi, rng, max_per_section: int = 8000):
    """Points on each section plane labelled inside (1: at/near spots) or outside (0: empty area)."""
    from scipy.spatial import cKDTree

    pts, lab = [], []
    margin = 0.25 * (hi[:2] - lo[:2]) + 2 * spacing
    a, b = lo[:2] - margin, hi[:2] + margin
    for i in idx:
        s = stack.sections[i]
        xy = s.xy
        m = int(min(max_per_section, max(2 * len(xy), 500)))
        cand = rng.uniform(a, b, size=(m, 2))
        d, _ = cKDTree(xy).query(cand, k=1)
        inside = d <= 1.0 * spacing
        outside = d >= 2.5 * spacing
        keep = inside | outside
        k = min(len(xy), m)
        own = xy[rng.choice(len(xy), k, replace=False)]
        p = np.concatenate([cand[keep], own])
        lbl = np.concatenate([inside[keep].astype(np.float32), np.ones(k, np.float32)])
        pts.append(np.column_stack([p, np.full(len(p), s.z)]))
        lab.append(lbl)
    return np.concatenate(pts).astype(np.float32), np.concatenate(lab).astype(np.float32)


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


def _cpu_threads(requested: int) -> int:
    """Threads for CPU training: as requested, else the cores not busy (1-minute load average).

    With OpenMP, asking for more threads than free cores makes every op wait on the busiest core
    (measured ~15× slower per step on a 2-core machine with one other busy process).
    """
    import os

    import torch

    if requested and requested > 0:
        return int(requested)
    n = os.cpu_count() or 1
    try:
        busy = int(round(os.getloadavg()[0]))
    except (OSError, AttributeError):
        busy = 0
    return int(max(1, min(torch.get_num_threads(), n - busy)))


SMALL_DATA = 2000  # training spots below which an ensemble is fitted by default
ENSEMBLE_SMALL = 4
SMALL_RANK = 8  # latent rank by default below SMALL_DATA spots (measured on breast ST: 8 ≫ 64 there)


class _Data:
    """Training arrays, split and normalization, resolved from a stack and a config."""

    def __init__(self, stack, config: FieldConfig, sections):
        idx = list(stack.training_sections() if sections is None else sections)
        if not idx:
            raise InputError(None, "no sections to train on (all are excluded)")
        for i in idx:
            if not 0 <= int(i) < len(stack.sections):
                raise InputError(None, f"section index {i} out of range (stack has {len(stack.sections)})")
        self.idx = [int(i) for i in idx]
        X = stack.expression(self.idx).astype(np.float32)
        xyz = stack.coords(self.idx).astype(np.float64)
        if len(X) < 10:
            raise InputError(", ".join(stack.names[i] for i in self.idx), f"only {len(X)} spots to train on; need ≥ 10")
        if not np.isfinite(X).all() or not np.isfinite(xyz).all():
            raise InputError(", ".join(stack.names[i] for i in self.idx), "NaN or infinite values in expression or coordinates")
        self.n_genes = X.shape[1]
        self.mean = X.mean(0)
        sd = X.std(0)
        floor = max(float(sd.max()) * 1e-3, 1e-6)
        self.std = np.where(sd > floor, sd, 1.0).astype(np.float32) if config.standardize else np.ones_like(sd)
        if not config.standardize:
            self.mean = np.zeros_like(self.mean)
        self.X_raw_min = float(X.min())
        self.Xs = ((X - self.mean) / self.std).astype(np.float32)
        self.xyz = xyz.astype(np.float32)
        self.lo, self.hi = xyz.min(0), xyz.max(0)
        self.spacing = _spacing(stack, self.idx)
        self.z_spacing = _z_spacing(xyz[:, 2])
        rng = np.random.default_rng(config.seed)
        n = len(X)
        n_val = int(round(config.val_frac * n)) if config.val_frac > 0 else 0
        n_val = min(n_val, n - 5)
        perm = rng.permutation(n)
        self.val = np.sort(perm[:n_val])
        self.train = np.sort(perm[n_val:])
        self.occ_xyz, self.occ_lab = _occupancy_samples(stack, self.idx, self.spacing, self.lo, self.hi, rng)

    def arch(self, cfg: FieldConfig, wl_xy: float, wl_z: float) -> dict:
        lo, hi = self.lo.copy(), self.hi.copy()
        if hi[2] - lo[2] < 1e-6:  # one section: a thin slab
            lo[2] -= 1.0
            hi[2] += 1.0
        extent = hi - lo
        n_fz = cfg.n_freq_z if self.z_spacing is not None else 0
        zsp = self.z_spacing or 1.0
        return {
            "encoding": cfg.encoding,
            "center": ((lo + hi) / 2).tolist(),
            "extent": extent.tolist(),
            "lo": (lo - 0.05 * extent).tolist(),
            "hi": (hi + 0.05 * extent).tolist(),
            "n_freq": [cfg.n_freq_xy, cfg.n_freq_xy, n_fz],
            "min_wavelength": [wl_xy, wl_xy, wl_z],
            "hash_coarse": [max(extent[0], 1.0) / 2, max(extent[1], 1.0) / 2, max(extent[2], zsp) / 2 + zsp],
            "hash_fine": [cfg.hash_finest_um or self.spacing, cfg.hash_finest_um or self.spacing, wl_z / 2],
            "hash_levels": cfg.hash_levels,
            "hash_features": cfg.hash_features,
            "hash_log2_table": cfg.hash_log2_table,
            "width": cfg.width,
            "depth": cfg.depth,
            "rank": min(cfg.rank or (SMALL_RANK if len(self.train) < SMALL_DATA else 64), self.n_genes),
            "n_genes": self.n_genes,
            "seed": cfg.seed,
        }


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


def _lr_at(step: int, total: int, base: float) -> float:
    warm = min(50, max(total // 20, 1))
    if step < warm:
        return base * (step + 1) / warm
    t = (step - warm) / max(total - warm, 1)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def _state_copy(net) -> dict:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _run_training(data: _Data, cfg: FieldConfig, arch: dict, steps: int, device, *, phase: str,
                  should_stop=None, checkpoint=None, resume_state=None, step_offset=0, total_all=None,
                  t_start=None, meta_for_ckpt=None):
    """Generator: trains one network; yields progress; returns (net, best_val, history, stopped)."""
    import torch

    from .losses import AdamW, FeatureExtractor, kl_loss, pretrain_extractor, rc_loss, rmse
    from .model import build_net

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    net = build_net(arch)
    _pca_init(net, data.Xs[data.train], arch["rank"], cfg.seed)
    net.to(device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    Xs = torch.from_numpy(data.Xs).to(device)
    xyz = torch.from_numpy(data.xyz).to(device)
    occ_xyz = torch.from_numpy(data.occ_xyz).to(device)
    occ_lab = torch.from_numpy(data.occ_lab).to(device)
    mean = torch.from_numpy(data.mean).to(device)
    std = torch.from_numpy(data.std).to(device)
    train_idx = torch.from_numpy(data.train)
    val_idx = torch.from_numpy(data.val).to(device)
    H = None
    if cfg.lambda_rc > 0:
        H = FeatureExtractor(data.n_genes, cfg.rc_dim).to(device)
        pretrain_extractor(H, Xs[train_idx.to(device)], steps=cfg.rc_pretrain_steps, generator=gen)
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
        gen.manual_seed(cfg.seed + 1 + start)
        batch = int(resume_state.get("batch", batch))
    import copy

    # exponential moving average of the weights: validated, kept and returned (smoother, less variance)
    ema_net = copy.deepcopy(net) if cfg.ema > 0 else net
    if cfg.ema > 0 and resume_state is not None and resume_state.get("ema"):
        ema_net.load_state_dict(resume_state["ema"])
    ema_params = [p for p in ema_net.parameters()]
    net_params = [p for p in net.parameters()]
    anneal = max(int(cfg.anneal_frac * steps), 0)
    has_alpha = hasattr(net.enc, "alpha")
    n_train = len(data.train)
    n_occ = len(data.occ_xyz)
    t0 = time.perf_counter() if t_start is None else t_start
    total_all = total_all or steps
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else _nullctx()

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
            for pe, p in zip(ema_params, net_params):
                pe.lerp_(p, 1.0 - d)

    def validate():
        if len(data.val) == 0:
            return float("nan")
        ema_net.eval()
        with torch.no_grad():
            errs = []
            for s in range(0, len(val_idx), 16384):
                vi = val_idx[s:s + 16384]
                with amp:
                    _, pred, _ = ema_net(xyz[vi])
                errs.append(((pred.float() - Xs[vi]) ** 2).sum().item())
        net.train()
        return math.sqrt(sum(errs) / (len(data.val) * data.n_genes))

    stopped = False
    step = start
    last = {}
    while step < steps:
        if should_stop is not None and should_stop():
            stopped = True
            if checkpoint is not None and step > start:
                _save_checkpoint(checkpoint, net, opt, step, best_val, best_state, best_step, bad, history, batch,
                                 meta_for_ckpt, ema_net)
            break
        set_alpha(step)
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, steps, cfg.lr)
        bi = train_idx[torch.randint(0, n_train, (min(batch, n_train),), generator=gen)].to(device)
        oi = torch.randint(0, n_occ, (max(batch // 2, 256),), generator=gen).to(device)
        try:
            with amp:
                _, pred, _ = net(xyz[bi])
                occ_logit = net.occupancy_logit(occ_xyz[oi])
            pred = pred.float()
            true = Xs[bi]
            parts = {"rec": rmse(pred, true)}
            if H is not None:
                parts["rc"] = rc_loss(H, pred, true)
            if cfg.lambda_kl > 0:
                parts["kl"] = kl_loss(pred * std + mean, true * std + mean)
            if cfg.lambda_occ > 0:
                parts["occ"] = torch.nn.functional.binary_cross_entropy_with_logits(occ_logit.float(), occ_lab[oi])
            loss = parts["rec"] + cfg.lambda_rc * parts.get("rc", 0.0) + cfg.lambda_kl * parts.get("kl", 0.0) \
                + cfg.lambda_occ * parts.get("occ", 0.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            update_ema(step)
        except torch.cuda.OutOfMemoryError:
            opt.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            if batch <= 64:
                raise
            batch //= 2
            continue
        step += 1
        rec = {"step": step, "loss": float(loss.detach()), **{k: float(v.detach()) for k, v in parts.items()}}
        val = None
        if step % cfg.val_every == 0 or step == steps:
            val = validate()
            rec["val"] = val
            if not math.isnan(val) and val < best_val - 1e-5:
                best_val, best_state, best_step, bad = val, _state_copy(ema_net), step, 0
            elif step >= anneal:
                bad += 1
        history.append(rec)
        if checkpoint is not None and cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            _save_checkpoint(checkpoint, net, opt, step, best_val, best_state, best_step, bad, history, batch,
                             meta_for_ckpt, ema_net)
        elapsed = time.perf_counter() - t0
        done = step_offset + step
        last = {"step": done, "total": total_all, "loss": rec["loss"],
                "losses": {k: rec[k] for k in parts}, "val": val, "best_val": best_val if best_val < float("inf") else None,
                "eta_s": elapsed / max(done - start, 1) * (total_all - done),
                "phase": phase}
        if val is not None or step % 10 == 0 or step == steps:
            last["net"] = ema_net  # the live network (for previews taken between steps; do not keep)
            yield last
        if len(data.val) and bad >= cfg.patience and step >= anneal:
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    elif ema_net is not net:
        net.load_state_dict(ema_net.state_dict())
    if has_alpha:
        net.enc.alpha.fill_(1.0 if anneal == 0 else min(1.0, best_step / max(anneal, 1)) if best_step else 1.0)
    if best_val == float("inf") and len(data.val):
        best_val = validate()
    return net, best_val, history, stopped, best_step


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


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


def _stack_meta(stack, idx, spacing, z_spacing) -> dict:
    return {
        "names": list(stack.names),
        "z": [float(v) for v in stack.z],
        "transforms": [np.asarray(m, dtype=float).tolist() for m in stack.transforms()],
        "sources": [s.source for s in stack.sections],
        "training_sections": list(idx),
        "spot_spacing_um": spacing,
        "z_spacing_um": z_spacing,
        "unit_factor": float(getattr(stack, "unit_factor", 1.0)),
        "gene_policy": getattr(stack, "gene_policy", ""),
    }


def iter_fit(stack, config: FieldConfig | None = None, *, sections: Iterable[int] | None = None,
             progress: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None,
             checkpoint=None, resume=None):
    """Train a field on ``stack`` (generator; yields progress dicts, returns the FieldModel)."""
    import torch

    cfg = (config or FieldConfig()).replace().validate()
    t0 = time.perf_counter()
    data = _Data(stack, cfg, sections)
    device = select_device(cfg.device)
    resume_state = None
    if resume is not None:
        resume_state = load_checkpoint(resume)
        m = resume_state.get("meta", {})
        if m.get("genes") is not None and list(m["genes"]) != list(stack.genes):
            raise InputError(resume, "checkpoint was trained on other genes than this stack")
        if m.get("config"):
            cfg = FieldConfig.from_dict(m["config"])
    old_threads = torch.get_num_threads()
    threads = old_threads
    if device.type == "cpu":
        threads = _cpu_threads(cfg.threads)
        torch.set_num_threads(threads)
    try:
        model = yield from _iter_fit_body(stack, cfg, data, device, threads, resume_state, progress, should_stop,
                                          checkpoint, t0)
    finally:
        torch.set_num_threads(old_threads)
    return model


def _iter_fit_body(stack, cfg, data, device, threads, resume_state, progress, should_stop, checkpoint, t0):
    import copy

    import torch

    from .. import __version__
    from .model import FieldModel

    wl_z = cfg.min_wavelength_z_um or (2.5 * data.z_spacing if data.z_spacing else 1e6)
    stack_meta = _stack_meta(stack, data.idx, data.spacing, data.z_spacing)
    floor = data.X_raw_min if data.X_raw_min >= 0 else None

    def make_model(net, arch, cfg_, prov=None, history=None, copy_net=True):
        net = copy.deepcopy(net) if copy_net else net
        net = net.float().cpu().eval()
        for p in net.parameters():
            p.requires_grad_(False)
        return FieldModel(net, genes=stack.genes, mean=data.mean, std=data.std, arch=arch, config=cfg_,
                          normalize=stack.normalize, stack_meta=stack_meta, bounds=(data.lo, data.hi),
                          provenance=prov, history=history, value_floor=floor)

    total = cfg.steps
    wl_xy = cfg.min_wavelength_xy_um
    probe_log = []
    step_offset = 0
    best_probe = None  # (val, wavelength, net, arch, history, best_step)
    stopped = False
    if wl_xy is None and cfg.encoding == "fourier" and resume_state is None:
        cands = [float(c) * data.spacing for c in cfg.wavelength_candidates]
        if len(cands) == 1:
            wl_xy = cands[0]
        else:
            probe_steps = max(int(0.25 * cfg.steps), 2 * cfg.val_every)
            total = probe_steps * len(cands) + cfg.steps
            pcfg = cfg.replace(patience=max(2, cfg.patience // 2), checkpoint_every=0)
            for c in cands:
                arch_c = data.arch(cfg, c, wl_z)
                gen = _run_training(data, pcfg, arch_c, probe_steps, device, phase=f"probe λxy={c:.0f}µm",
                                    should_stop=should_stop, step_offset=step_offset, total_all=total, t_start=t0)
                net_c, v, hist_c, stopped, bstep = yield from _forward(
                    gen, progress, lambda n, a=arch_c, w=c: make_model(n, a, cfg.replace(min_wavelength_xy_um=w,
                                                                                      min_wavelength_z_um=wl_z)))
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
                      rank=int(data.arch(cfg, wl_xy, wl_z)["rank"]))
    k_members = int(cfg.ensemble) if cfg.ensemble > 0 else (ENSEMBLE_SMALL if len(data.train) < SMALL_DATA else 1)
    if resume_state is not None:
        k_members = 1
    if stopped and best_probe is not None:  # cancelled while choosing the scale: keep the best probe
        _, _, net, arch, history, best_step = best_probe
        best_val, stopped2 = best_probe[0], True
    elif k_members > 1:  # small data: an ensemble of fields (different seeds) averaged → less variance
        total = step_offset + k_members * cfg.steps
        nets, vals, history, stopped2, best_step = [], [], [], False, 0
        for k in range(k_members):
            mcfg = cfg.replace(seed=cfg.seed + 1000 * k)
            arch_k = data.arch(mcfg, wl_xy, wl_z)
            gen = _run_training(data, mcfg, arch_k, cfg.steps, device, phase=f"fit {k + 1}/{k_members}",
                                should_stop=should_stop, step_offset=step_offset, total_all=total, t_start=t0)
            net_k, v, hist_k, stopped2, best_step = yield from _forward(
                gen, progress, lambda n, a=arch_k: make_model(n, a, cfg))
            nets.append(net_k)
            vals.append(v)
            history += [dict(h, step=h["step"] + step_offset) for h in hist_k]
            step_offset += cfg.steps
            if stopped2:
                break
        from .model import build_net

        arch = dict(data.arch(cfg, wl_xy, wl_z), members=len(nets))
        net = build_net(arch) if len(nets) > 1 else nets[0]
        if len(nets) > 1:
            for m, n in zip(net.members, nets):
                m.load_state_dict(n.state_dict())
            net.combine()
        else:
            arch = data.arch(cfg, wl_xy, wl_z)
        best_val = float(np.mean(vals))
    else:
        arch = data.arch(cfg, wl_xy, wl_z)
        meta_ck = {"genes": list(stack.genes), "config": cfg.to_dict()}
        gen = _run_training(data, cfg, arch, cfg.steps, device, phase="fit", should_stop=should_stop,
                            checkpoint=checkpoint, resume_state=resume_state, step_offset=step_offset,
                            total_all=total, t_start=t0, meta_for_ckpt=meta_ck)
        net, best_val, history, stopped2, best_step = yield from _forward(
            gen, progress, lambda n: make_model(n, arch, cfg))
    prov = {
        "napari_inrst": __version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "inputs": [s.source for s in stack.sections],
        "torch": torch.__version__,
        "device": str(device),
        "threads": threads,
        "fit_seconds": round(time.perf_counter() - t0, 2),
        "steps_run": history[-1]["step"] if history else 0,
        "members": int(arch.get("members", 1)),
        "best_step": best_step,
        "val_rmse": best_val,
        "probes": probe_log,
        "cancelled": bool(stopped2),
    }
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
