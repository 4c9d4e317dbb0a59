"""Fitting the expression field on a section stack: selection run → final run → blend.

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

The parts: one run of one network is a :class:`~.trainer.Trainer`; the report is
:mod:`.validation`; the network is built from a :class:`~.spec.ModelConfig`.
"""

from __future__ import annotations

import copy
import datetime as _dt
import os
import time
from typing import Callable, Iterable

import numpy as np
import torch

from ..errors import InputError
from .checkpoint import Checkpointer, load_checkpoint
from .config import FieldConfig
from .data import choose_data
from .device import cpu_threads, dist_info, select_device
from .interpolant import Interpolant
from .model import FieldModel
from .networks import ensemble_of
from .spec import ModelConfig
from .trainer import Progress, Trainer
from .validation import SECTION_K, interp_basis, validation_report


def fit_flow(job):
    """Selection run → final run(s) → one model blended with the interpolant (a generator over
    the runs' progress records; returns the :class:`~.model.FieldModel`).

    1. *Selection*: one network trained on the validation split that mimics the task, early
       stopped on it; the blend weight w is chosen on its predictions of the held-out cells, and
       its scores are the model's ``validation`` report.
    2. *Final*: the same schedule on every training cell (one network, or each member of an
       ensemble), stopped at the selected step. Skipped when cancelled while selecting, with
       ``final_fit`` off, or for large data validated on held-out spots.
    3. *Blend*: the interpolant over the cells the kept network saw, with the chosen weight.
    """
    net_sel, sel, stopped = yield from job.select()
    if stopped or not job.final_needed:
        nets, rows, kept = [net_sel], job.split[0], job.kept_without_final(stopped)
    else:
        nets, rows, kept, stopped = yield from job.final(sel, net_sel)
    net = nets[0] if len(nets) == 1 else ensemble_of(job.spec, nets)
    interp = job.interpolant(sel["blend_weight"], rows, sel.get("blend_mix", 0.0))
    return job.model(net, sel, interp, kept, stopped, members=len(nets))


class _Fit:
    """The state a fit shares between its runs: data, recipe, network description, the plan of
    steps, the history, the resumed checkpoint."""

    def __init__(self, stack, cfg, data, device, *, threads, resume, progress, should_stop, checkpoint, t0,
                 on_status=None):
        self.spec = ModelConfig.for_data(cfg, data)
        # the stored recipe: the encoding's data-dependent settings and the rank resolved
        self.cfg = cfg.replace(encoding=self.spec.encoding.settings(), rank=self.spec.rank)
        self.stack, self.data, self.device, self.threads = stack, data, device, threads
        self.resume, self.progress, self.should_stop = resume, progress, should_stop
        self.checkpoint, self.t0, self.on_status = checkpoint, t0, on_status
        self.stack_meta = stack_meta_of(stack, data)
        self.k_members = max(1, int(self.cfg.ensemble))
        if checkpoint is not None and self.k_members > 1:
            raise InputError(checkpoint, "checkpoints are written for single-network fits only; "
                                         f"this config averages {self.k_members} networks (ensemble)")
        task, tr, va, pos = data.task_split(self.cfg)
        self.task, self.split, self.val_pos = task, (tr, va), pos
        self.ck_meta = resume.get("meta", {}) if resume is not None else {}
        self.final_needed = bool(self.cfg.final_fit) and (len(data.train) + len(data.val) < self.cfg.large_data
                                                          or task != "held-out spots")
        # the whole plan is known before the first step: the total never changes during the fit
        self.n_phases = 1 + (self.k_members if self.final_needed else 0)
        self.total = self.cfg.steps * self.n_phases
        self.history: list = []
        self.steps_run = 0  # steps actually taken in this call, every network together

    # --- the runs -------------------------------------------------------------------------
    def _run(self, cfg, spec, *, phase, index, kind, rows, offset, stop_at=None, checkpoint=None, resume=None,
             meta=None):
        clock = Progress(total=self.total, offset=offset, phase=phase, t0=self.t0, on_status=self.on_status,
                         info={"phase_index": index, "n_phases": self.n_phases, "kind": kind})
        ck = Checkpointer(checkpoint, cfg.checkpoint_every, meta, dist_info()[0]) if checkpoint is not None else None
        trainer = Trainer(self.data, cfg, spec, cfg.steps, self.device, rows=rows, stop_at=stop_at, clock=clock,
                          checkpoint=ck, resume=resume, should_stop=self.should_stop)
        res = yield from _forward(trainer.run(), self.progress, lambda n: self.model(n, copy_net=True))
        start = int(resume["step"]) if resume is not None else 0
        self.steps_run += (res.history[-1]["step"] if res.history else start) - start
        self.history += [dict(h, step=h["step"] + offset) for h in res.history]
        return res

    def select(self):
        """The selection run and its validation report → (network, report, cancelled). A
        resumed final run has its report in the checkpoint (and no selection network)."""
        if self.ck_meta.get("phase") == "final":
            return None, self.ck_meta["selection"], False
        meta = {"genes": list(self.stack.genes), "config": self.cfg.to_dict(), "phase": "select"}
        res = yield from self._run(self.cfg, self.spec, phase="select", index=0, kind="selection", rows=self.split,
                                   offset=0, checkpoint=self.checkpoint, resume=self.resume, meta=meta)
        tr, va = self.split
        names = [self.stack.names[i] for i in self.data.idx]
        sel = validation_report(res.net, self.data, self.task, tr, va, self.val_pos, names, self.cfg)
        sel.update(best_step=int(res.best_step), val_rmse=float(res.best_val),
                   selection_steps=int(res.history[-1]["step"] if res.history else 0),
                   selection_seconds=round(time.perf_counter() - self.t0, 2))
        return res.net, sel, res.stopped

    def final(self, sel, net_sel):
        """The final run: every network on every training cell up to the selected step →
        (networks, their training rows, what was kept, cancelled)."""
        k_members, nets, stopped = self.k_members, [], False
        all_rows = np.arange(self.data.n)
        resume = self.resume if self.ck_meta.get("phase") == "final" else None
        meta = {"genes": list(self.stack.genes), "config": self.cfg.to_dict(), "phase": "final", "selection": sel}
        for k in range(k_members):
            cfg_k = self.cfg.replace(seed=self.cfg.seed + 1000 * k)
            phase = "fit" if k_members == 1 else f"fit {k + 1}/{k_members}"
            res = yield from self._run(
                cfg_k, self.spec.replace(seed=cfg_k.seed), phase=phase, index=1 + k,
                kind="final" if k_members == 1 else "members", rows=(all_rows, all_rows[:0]),
                offset=self.cfg.steps * (1 + k), stop_at=max(int(sel["best_step"]), 1), meta=meta,
                checkpoint=self.checkpoint if k_members == 1 else None, resume=resume)
            if res.stopped:
                stopped = True
                break
            nets.append(res.net)
        if not stopped:
            kept = "final fit" if k_members == 1 else f"final fit, ensemble of {k_members} networks"
            return nets, all_rows, kept, False
        if nets:  # cancelled during a later member: the finished ones are complete final networks
            return nets, all_rows, f"final fit, {len(nets)} of {k_members} ensemble networks (cancelled)", True
        if net_sel is not None:  # cancelled during the final run: the validated selection network
            return [net_sel], self.split[0], "selection network (validated; final run cancelled)", True
        # a resumed final run cancelled again: the selection network is not in the checkpoint
        return [res.net], all_rows, "final fit (interrupted; the selection network was not in the checkpoint)", True

    def kept_without_final(self, stopped: bool) -> str:
        if stopped:
            return "selection network (best validated weights so far)"
        return "selection network (no final run: " + ("final_fit off)" if not self.cfg.final_fit else "large data)")

    # --- the model ------------------------------------------------------------------------
    def interpolant(self, weight: float, rows, mix: float = 0.0):
        if weight <= 0:
            return None
        V, coef = interp_basis(self.data, rows, self.cfg.seed)
        dims = 3 if self.data.z_spacing is not None else 2
        return Interpolant(self.data.xyz[rows], coef, V, weight, k=5 if dims == 3 else 4, dims=dims, mix=mix,
                           k_sections=SECTION_K)

    def model(self, net, sel=None, interp=None, kept="", stopped=False, *, members=1, copy_net=False):
        """A FieldModel of ``net`` (a snapshot while training: ``copy_net``, no report)."""
        net = getattr(net, "_orig_mod", net)  # a compiled network's module
        net = copy.deepcopy(net) if copy_net else net
        net = net.float().cpu().eval()
        for p in net.parameters():
            p.requires_grad_(False)
        prov = validation = None
        if sel is not None:
            prov = self.provenance(sel, kept, stopped, members)
            validation = {k: v for k, v in sel.items() if k not in ("val_rmse", "selection_seconds", "selection_steps")}
        floor = self.data.X_raw_min if self.data.X_raw_min >= 0 else None
        return FieldModel(net, genes=self.stack.genes, mean=self.data.mean, std=self.data.std,
                          spec=self.spec.replace(members=members), config=self.cfg, normalize=self.stack.normalize,
                          stack_meta=self.stack_meta, bounds=(self.data.lo, self.data.hi), provenance=prov,
                          history=self.history if sel is not None else None, value_floor=floor, interp=interp,
                          validation=validation)

    def provenance(self, sel, kept, stopped, members) -> dict:
        from .. import __version__

        h, dev = self.history, self.device
        prov = {
            "napari_inrst": __version__,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "inputs": [s.source for s in self.stack.sections],
            "torch": torch.__version__,
            "device": str(dev) if dev.type != "cuda" else f"{dev} ({torch.cuda.get_device_name(dev)})",
            "threads": self.threads,
            "processes": dist_info()[1],
            "fit_seconds": round(time.perf_counter() - self.t0, 2),
            "selection_seconds": sel.get("selection_seconds"),
            "steps_run": h[-1]["step"] if h else 0,
            "members": members,
            "best_step": int(sel["best_step"]),
            "val_rmse": sel.get("val_rmse"),
            "targets": self.stack_meta["targets"],
            "read_seconds": round(float(getattr(self.data, "read_seconds", 0.0)), 2),
            "samples_per_s": float(np.median([x["samples_per_s"] for x in h[-5:]])) if h else 0.0,
            "blend_weight": sel["blend_weight"],
            "cancelled": bool(stopped),
            "steps_planned": int(self.total),
            "steps_total_run": int(self.steps_run),
            "kept": kept,
        }
        if getattr(self.data, "projected", False):
            prov["pca_explained_variance"] = round(self.data.explained, 4)
        return prov


def _resume(path, stack, cfg):
    """(checkpoint, the recipe it was trained with) for ``resume=path``."""
    state = load_checkpoint(path)
    m = state.get("meta", {})
    if m.get("genes") is not None and list(m["genes"]) != list(stack.genes):
        raise InputError(path, "checkpoint was trained on other genes than this stack")
    if m.get("config"):
        cfg = FieldConfig.from_dict(m["config"])
    return state, cfg


def stack_meta_of(stack, data) -> dict:
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
    cfg = (config or FieldConfig()).replace().validate()
    t0 = time.perf_counter()
    device = select_device(cfg.device)
    rank, _ = dist_info()
    if device.type == "cuda" and torch.distributed.is_available() and torch.distributed.is_initialized():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)) % max(torch.cuda.device_count(), 1))
    resume_state = None
    if resume is not None:
        resume_state, cfg = _resume(resume, stack, cfg)
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
        threads = cpu_threads(cfg.threads)
        torch.set_num_threads(threads)
    try:
        job = _Fit(stack, cfg, data, device, threads=threads, resume=resume_state, progress=progress,
                   should_stop=should_stop, checkpoint=checkpoint, t0=t0, on_status=on_status)
        model = yield from fit_flow(job)
    finally:
        torch.set_num_threads(old_threads)
    return model


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
    from ..generators import run_to_end

    return run_to_end(iter_fit(stack, config, sections=sections, progress=progress, should_stop=should_stop,
                               checkpoint=checkpoint, resume=resume))
