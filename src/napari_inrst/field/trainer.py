"""One training run of one field network: :class:`Trainer`.

``Trainer(...).run()`` is a generator: it yields progress records and returns a
:class:`RunResult` (the network with its best validated weights, …). The parts live in their own
modules: the loss (:class:`~.losses.Objective`), the optimizer (:mod:`.optim`), the
learning-rate and coarse-to-fine schedules (:mod:`.schedule`), the weight average
(:mod:`.ema`), checkpoints (:mod:`.checkpoint`), device and threads (:mod:`.device`). How runs
make a model (selection, final run, blend) is :mod:`.fit`.

Speed: the data live on the training device; batches are drawn there (a device generator); the
loop waits on the device only every ``log_every`` steps (progress) and at validation. On CUDA:
TF32 matmuls, bf16 autocast, ``torch.compile`` (``config.compile``). Under ``torch.distributed``
with more than one process the network is wrapped in DistributedDataParallel: every process
draws batches from its own share of the training cells, validation errors are summed over
processes, so all processes take the same early-stopping decisions.
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .checkpoint import Checkpointer
from .device import dist_info, maybe_compile, nullctx
from .ema import EMA
from .losses import Objective, consistency_extractor
from .networks import fixed_decoder, pca_init_decoder
from .optim import AdamW
from .schedule import AnnealSchedule, LRSchedule

VAL_CHUNK = 16384  # validation points per forward pass


class DeviceData:
    """The training data on the device: targets, coordinates, occupancy samples, this process's
    share of the training and validation rows, and the seeded generator batches are drawn with."""

    def __init__(self, data, rows, device, seed: int, rank: int = 0, world: int = 1):
        self.projected = bool(getattr(data, "projected", False))
        on = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
        self.T, self.xyz = on(data.targets), on(data.xyz)
        self.occ_xyz, self.occ_lab = on(data.occ_xyz), on(data.occ_lab)
        self.mean, self.std = on(data.mean), on(data.std)
        self.basis = on(data.basis) if self.projected else None
        self.resid = on(data.resid) if self.projected else None
        tr, va = (np.asarray(r, dtype=np.int64) for r in rows)
        self.train_rows = tr
        self.train_idx = on(tr)[rank::world]
        self.val_idx = on(va)[rank::world]
        self.n_val = len(va)  # over every process
        self.device, self.seed, self.rank = device, int(seed), rank
        self.gen = torch.Generator(device=device)
        self.reseed(0)

    def reseed(self, start: int):
        self.gen.manual_seed(self.seed + 1 + 7919 * self.rank + start)

    def draw(self, batch: int):
        """(training rows, occupancy sample indices) of one batch."""
        n = len(self.train_idx)
        b = min(batch, n)
        bi = self.train_idx[torch.randint(0, n, (b,), device=self.device, generator=self.gen)]
        oi = torch.randint(0, len(self.occ_xyz), (max(b // 2, 256),), device=self.device, generator=self.gen)
        return bi, oi


@dataclass
class RunResult:
    net: object  # the network with the kept weights (best validated, else the last averaged ones)
    best_val: float
    history: list
    stopped: bool  # cancelled
    best_step: int


@dataclass
class _State:
    """What changes step by step (and what a checkpoint holds)."""

    step: int = 0
    best_val: float = math.inf
    best_state: dict | None = None
    best_step: int = 0
    bad: int = 0  # validations without improvement (after annealing)
    batch: int = 4096
    history: list = field(default_factory=list)


class Trainer:
    """Trains one network of ``spec`` (a :class:`~.spec.ModelConfig`) on ``data`` with recipe
    ``cfg`` for a ``steps``-step schedule, stopping after ``stop_at`` (the schedule unchanged).

    ``rows``: (train, val) row indices (default ``data.train``, ``data.val``); empty ``val``:
    no validation, the last weights are kept. ``clock``: a :class:`Progress` (progress records:
    offset, plan, phase); ``checkpoint``: a :class:`~.checkpoint.Checkpointer`; ``resume``: a
    loaded checkpoint to continue from.
    """

    def __init__(self, data, cfg, spec, steps: int, device, *, rows=None, stop_at=None, clock=None,
                 checkpoint: Checkpointer | None = None, resume: dict | None = None, should_stop=None):
        self.cfg, self.spec, self.steps, self.device = cfg, spec, int(steps), device
        self.rank, self.world = dist_info()
        self.end = int(self.steps if stop_at is None else max(1, min(int(stop_at), self.steps)))
        self.clock = clock or Progress(total=self.steps)
        self.checkpoint, self.should_stop = checkpoint, should_stop
        self.lr = LRSchedule(cfg.lr, self.steps)
        self.anneal = AnnealSchedule.of(cfg.anneal_frac, self.steps)
        self.clock.status("initialising the network (PCA start of the gene decoder)")
        torch.manual_seed(cfg.seed)
        self.net = spec.build()
        rows = (data.train, data.val) if rows is None else rows
        if getattr(data, "projected", False):
            fixed_decoder(self.net, data.basis)
        else:
            pca_init_decoder(self.net, data.targets[rows[0]], spec.rank, cfg.seed)
        self.net.to(device)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.d = DeviceData(data, rows, device, cfg.seed, self.rank, self.world)
        H = consistency_extractor(cfg, self.d, self.d.train_rows, data.n_genes, device)
        self.objective = Objective(cfg, self.d, data.n_genes, H)
        self.opt = AdamW([p for p in self.net.parameters() if p.requires_grad], lr=cfg.lr,
                         weight_decay=cfg.weight_decay)
        self.s = _State(batch=int(cfg.batch_size))
        if resume is not None:
            self._restore(resume)
        self.ema = EMA(self.net, cfg.ema)
        if resume is not None:
            self.ema.load_state_dict(resume.get("ema"))
        self.model = self._wrap(self.net)
        self.amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullctx()

    def _wrap(self, net):
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        return maybe_compile(net, self.cfg, self.device)

    # --- checkpoints ----------------------------------------------------------------------
    def _restore(self, r: dict):
        self.net.load_state_dict(r["net"])
        self.opt.load_state_dict(r["opt"])
        self.s = _State(step=int(r["step"]), best_val=float(r["best_val"]), best_state=r.get("best_net") or None,
                        best_step=int(r.get("best_step", 0)), bad=int(r.get("bad", 0)),
                        batch=int(r.get("batch", self.s.batch)), history=list(r.get("history", [])))
        self.d.reseed(self.s.step)

    def _save(self):
        s = self.s
        self.checkpoint.save({"net": self.net.state_dict(), "opt": self.opt.state_dict(), "step": s.step,
                              "best_val": float(s.best_val), "best_net": s.best_state or {},
                              "best_step": int(s.best_step), "bad": int(s.bad), "history": s.history[-2000:],
                              "batch": int(s.batch), "ema": self.ema.state_dict()})

    # --- one step, validation -------------------------------------------------------------
    def step(self):
        """One optimizer step on a fresh batch → (loss, {term: value}, batch size), or None when
        the device ran out of memory (the batch is halved for the next try)."""
        s = self.s
        self.net.anneal(self.anneal.progress(s.step))
        self.ema.net.anneal(self.anneal.progress(s.step))
        for g in self.opt.param_groups:
            g["lr"] = self.lr(s.step)
        bi, oi = self.d.draw(s.batch)
        try:
            with self.amp:
                lat, pred, occ_logit = self.model(self.d.xyz[bi], self.d.occ_xyz[oi], decode=not self.d.projected)
            loss, parts = self.objective(lat, pred, bi, occ_logit, oi)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.ema.update(s.step)
        except torch.cuda.OutOfMemoryError:
            self.opt.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            if s.batch <= 64 or self.world > 1:
                raise
            s.batch //= 2
            return None
        return loss, parts, len(bi)

    def validate(self) -> float:
        """RMSE over every gene of the averaged network on the validation rows (NaN without)."""
        if self.d.n_val == 0:
            return float("nan")
        net, d = self.ema.net, self.d
        net.eval()
        err = torch.zeros((), device=self.device, dtype=torch.float64)
        with torch.no_grad():
            for s0 in range(0, len(d.val_idx), VAL_CHUNK):
                vi = d.val_idx[s0:s0 + VAL_CHUNK]
                with self.amp:
                    lat, pred, _ = net(d.xyz[vi], decode=not d.projected)
                err += self.objective.sq_err(lat, pred, vi).double()
        if self.world > 1:
            torch.distributed.all_reduce(err)
        self.net.train()
        return math.sqrt(float(err) / (d.n_val * self.objective.n_genes))

    def _judge(self, val: float):
        """Early stopping's bookkeeping after a validation."""
        s = self.s
        if not math.isnan(val) and val < s.best_val - 1e-5:
            s.best_val, s.best_step, s.bad = val, s.step, 0
            s.best_state = {k: v.detach().clone() for k, v in self.ema.net.state_dict().items()}
        elif self.anneal.opened(s.step):
            s.bad += 1

    def _done(self) -> bool:
        s = self.s
        return bool(self.d.n_val) and s.bad >= self.cfg.patience and self.anneal.opened(s.step)

    # --- the loop -------------------------------------------------------------------------
    def run(self):
        """Generator: trains; yields progress records; returns a :class:`RunResult`."""
        s, cfg, start = self.s, self.cfg, self.s.step
        meter = _Meter(self.world)
        stopped = False
        while s.step < self.end:
            if self.should_stop is not None and self.should_stop():
                stopped = True
                if self.checkpoint is not None and s.step > start:
                    self._save()
                break
            out = self.step()
            if out is None:
                continue
            loss, parts, b = out
            s.step += 1
            meter.add(loss, parts, b)
            val = None
            if self.d.n_val and (s.step % cfg.val_every == 0 or s.step == self.end):
                val = self.validate()
                self._judge(val)
            report = val is not None or s.step % max(1, int(cfg.log_every)) == 0 or s.step == self.end
            rec = meter.record(s.step, self.clock.t0, val) if report else None
            if rec is not None:
                s.history.append(rec)
            if self.checkpoint is not None and self.checkpoint.due(s.step):
                self._save()
            if rec is not None:
                yield self.clock.record(rec, parts, s, start, self.steps, net=self.ema.net)
            if self._done():
                break
        return self._finish(stopped)

    def _finish(self, stopped: bool) -> RunResult:
        s = self.s
        if s.best_state is not None:
            self.net.load_state_dict(s.best_state)
        elif self.ema.active:
            self.net.load_state_dict(self.ema.net.state_dict())
        if not self.d.n_val:
            s.best_step = s.step  # no validation: the last weights, and the window as it was then
        self.net.anneal(self.anneal.kept(s.best_step))
        if s.best_val == math.inf and self.d.n_val:
            s.best_val = self.validate()
        if self.world > 1:
            # release the DistributedDataParallel wrapper (and its gloo/NCCL hooks) now, not at
            # interpreter exit after the process group is gone (an abort there)
            self.model = None
            gc.collect()
        return RunResult(self.net, s.best_val, s.history, stopped, s.best_step)


class _Meter:
    """Running means of the loss terms between progress records (one host sync per record)."""

    def __init__(self, world: int):
        self.world, self.acc, self.n, self.samples = world, None, 0, 0
        self.t_run = time.perf_counter()

    def add(self, loss, parts, b: int):
        vec = torch.stack([loss.detach(), *[v.detach() for v in parts.values()]])
        self.acc = vec if self.acc is None else self.acc + vec
        self.n += 1
        self.samples += b
        self.names = list(parts)

    def record(self, step: int, t0: float, val) -> dict:
        means = (self.acc / self.n).tolist()  # the one host sync of the interval
        self.acc, self.n = None, 0
        rate = self.samples * self.world / max(time.perf_counter() - self.t_run, 1e-9)
        rec = {"step": step, "t": round(time.perf_counter() - t0, 3), "loss": means[0],
               **dict(zip(self.names, means[1:])), "samples_per_s": round(rate, 1)}
        if val is not None:
            rec["val"] = val
        return rec


@dataclass
class Progress:
    """The progress records of a fit: steps are counted over the whole plan (``total``), a run
    starts at ``offset``; ``phase``/``info`` say which run; ``on_status`` hears what happens
    between records."""

    total: int
    offset: int = 0
    phase: str = "select"
    info: dict = field(default_factory=dict)
    t0: float = field(default_factory=time.perf_counter)
    on_status: object = None

    def status(self, what: str):
        if self.on_status is not None:
            self.on_status(f"{self.phase}: {what}")

    def record(self, rec: dict, parts, s: _State, start: int, steps: int, net=None) -> dict:
        elapsed = time.perf_counter() - self.t0
        done = self.offset + s.step
        return {"step": done, "total": self.total, "loss": rec["loss"], "losses": {k: rec[k] for k in parts},
                "val": rec.get("val"), "best_val": s.best_val if s.best_val < math.inf else None,
                "eta_s": elapsed / max(done - start, 1) * (self.total - done),
                "samples_per_s": rec["samples_per_s"], "phase": self.phase, "phase_start": self.offset,
                "phase_steps": steps, **self.info, "net": net}  # the live network (for previews; do not keep)
