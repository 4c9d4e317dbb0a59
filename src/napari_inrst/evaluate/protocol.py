"""Evaluation protocols: missing sections and missing spots, field vs baselines in one run.

A *fit function* ``fit_fn(stack, sections) -> predictor`` trains on the given section indices of
``stack`` and returns an object with ``predict(xyz) -> (n, n_genes)`` in the stack's gene order and
value space. The baselines (:mod:`.baselines`) and the INR (:func:`inr_fit_fn`) both fit this seam.

* :func:`leave_out` – one fit without the held-out sections, each held-out section predicted at
  its cells' (x, y) and z and scored (what ``napari-inrst evaluate --holdout`` runs).
* :func:`leave_one_section_out` – :func:`leave_out` for each interior section in turn, averaged.
* :func:`intra_section` – 50 % of one section's spots removed at random (fixed seed), fit on the
  rest, the removed spots predicted and scored; :func:`missing_spots` – that for several sections,
  averaged (``napari-inrst evaluate --missing-spots``).

Results are plain dicts (JSON-ready): ``{"methods": {name: {metric: value, ...}}, ...}``. With a
``labels_key``, ``ari`` is the ARI of a classifier (multinomial logistic regression trained on the
kept sections' measured expression) applied to each method's prediction; for fields (objects with
``latent``) also ``ari_domains``: k-means of the latent at the kept cells (k = number of classes),
held-out cells assigned to the nearest centroid – domains found without the labels.
"""

from __future__ import annotations

import platform
import time
from typing import Callable, Iterable, Sequence

import numpy as np

from ..measure import metrics as M
from ..measure.baselines import BASELINES
from .fitting import fit_timed, fit_predict, kept_sections

METRICS = ("pearson", "pearson_50um", "pearson_100um", "rmse", "ssim", "ari", "ari_domains")
TOP_GENES = 200


def hardware() -> str:
    """A short description of the machine the fit ran on."""
    try:
        import torch

        if torch.cuda.is_available():
            return f"cuda: {torch.cuda.get_device_name(0)}"
    except Exception:  # noqa: BLE001
        pass
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import os

    return f"cpu: {cpu} ({os.cpu_count()} cores)"


def log1p_values(stack):
    """A copy of ``stack`` whose values are ``log1p`` of the values as given (for data already
    normalized, e.g. MERFISH by cell volume: EVALUATION.md's reference figures are in this space)."""
    import anndata as ad

    out = stack.select(range(len(stack)))
    for s in out.sections:
        a = s.adata
        new = ad.AnnData(X=np.log1p(np.maximum(s.X, 0)).astype(np.float32), obs=a.obs.copy(), var=a.var.copy())
        new.obsm["spatial"] = np.asarray(a.obsm["spatial"])
        new.uns.update(dict(a.uns))
        for k in a.layers.keys():
            new.layers[k] = a.layers[k]
        s.adata = new
    out.normalize = "log1p(values as given)" if stack.normalize == "none" else f"log1p({stack.normalize})"
    return out


def select_genes(stack, kept: Sequence[int], genes="auto") -> tuple[np.ndarray, str]:
    """Indices of the genes to score and a sentence saying which.

    ``genes``: ``"all"``; an int N (the N most expressed over the kept sections); a list of gene
    names; or ``"auto"`` – the 200 most expressed for count data (``normalize='log1p'``, the rest is
    mostly counting noise), all genes otherwise.
    """
    n = stack.n_genes
    if isinstance(genes, str) and genes == "auto":
        genes = TOP_GENES if (stack.normalize == "log1p" and n > TOP_GENES) else "all"
    if isinstance(genes, str) and genes == "all":
        return np.arange(n), f"all {n} genes"
    if isinstance(genes, (int, np.integer)):
        X = np.concatenate([_raw(stack[i]) for i in kept], axis=0)
        idx = M.top_expressed_genes(X, int(genes))
        return idx, f"the {len(idx)} most expressed genes (mean over the kept sections)"
    idx = np.array([stack.gene_index(g) for g in genes])
    return idx, f"{len(idx)} chosen genes"


def _raw(section) -> np.ndarray:
    a = section.adata
    X = a.layers["counts"] if "counts" in a.layers else a.X
    return np.asarray(X.toarray() if hasattr(X, "toarray") else X, dtype=np.float64)


def score(truth, pred, xy, *, labels=None, classifier=None, single_cell: bool | None = None,
          bins: Iterable[float] = (50.0, 100.0), ssim: bool = True) -> dict:
    """All metrics of one prediction of one section (truth/pred: cells × scored genes).

    Binned Pearson only for single-cell data (NaN-free: omitted otherwise); ARI when ``labels`` and
    a fitted ``classifier`` (on the same genes as ``pred``'s columns ``classifier_genes``) are given.
    """
    xy = np.asarray(xy, dtype=np.float64)
    if single_cell is None:
        single_cell = M.is_single_cell(xy)
    out = {"pearson": M.pearson_per_gene(truth, pred), "rmse": M.rmse(truth, pred)}
    if single_cell:
        for b in bins:
            out[f"pearson_{int(b)}um"] = M.binned_pearson(xy, truth, pred, b)
    if ssim:
        out["ssim"] = M.ssim_per_gene(xy, truth, pred, single_cell=single_cell)
    if labels is not None and classifier is not None:
        out["ari"] = M.adjusted_rand_score(np.asarray(labels).astype(str), classifier.predict(pred))
    return out


def per_gene_scores(truth, pred, xy, genes: Sequence[str], single_cell: bool | None = None) -> list[dict]:
    """One row per gene: Pearson, RMSE, SSIM (the QC widget's table)."""
    r = M.pearson_each(truth, pred)
    e = M.rmse_each(truth, pred)
    s = M.ssim_each(xy, truth, pred, single_cell=single_cell)
    return [{"gene": g, "pearson": float(r[k]), "rmse": float(e[k]), "ssim": float(s[k])}
            for k, g in enumerate(genes)]


def _mean_rows(rows: list[dict]) -> dict:
    keys = sorted({k for r in rows for k in r})
    out = {}
    for k in keys:
        v = [r[k] for r in rows if k in r and isinstance(r[k], (int, float)) and np.isfinite(r[k])]
        if v:
            out[k] = float(np.mean(v))
    return out


def hold_out(stack, fit_fn: Callable, h: int, kept: Sequence[int] | None = None) -> dict:
    """Train without section ``h`` (and without excluded sections), predict it and score each gene:
    ``{"model", "index", "kept", "pred", "rows" (see :func:`per_gene_scores`), "fit_seconds"}``
    (what the QC widget's "Train without it" shows)."""
    h = int(h)
    kept = kept_sections(stack, [h]) if kept is None else [int(i) for i in kept]
    if not kept:
        raise ValueError("no section left to fit on")
    model, (pred,), fit_s = fit_predict(stack, fit_fn, kept, [h])
    s = stack[h]
    rows = per_gene_scores(s.X, pred, s.xy, stack.genes)
    return {"model": model, "index": h, "kept": kept, "pred": pred, "rows": rows, "fit_seconds": fit_s}


def leave_out(stack, fit_fn: Callable | None, holdout: Sequence[int], *,
              baselines: Sequence[str] = ("knn3d", "adjacent"), labels_key: str | None = None,
              genes="auto", single_cell: bool | None = None, method_name: str = "inr",
              fit_fns: dict | None = None, progress: Callable[[str], None] | None = None,
              ssim: bool = True) -> dict:
    """Fit every method once without the ``holdout`` sections (and without excluded ones), predict
    each held-out section at its cells, and score. ``fit_fn`` None: baselines only."""
    n = len(stack)
    holdout = [int(h) for h in holdout]
    bad = [h for h in holdout if not 0 <= h < n]
    if bad:
        raise IndexError(f"holdout index {bad[0]} out of range for {n} sections")
    kept = kept_sections(stack, holdout)
    if not kept:
        raise ValueError("no section left to fit on")
    gidx, gene_note = select_genes(stack, kept, genes)
    if single_cell is None:
        single_cell = M.is_single_cell(stack[kept[0]].xy)
    methods = _methods(fit_fn, method_name, baselines, fit_fns)

    clf = None
    if labels_key is not None:
        for i in kept + holdout:
            if labels_key not in stack[i].adata.obs:
                raise KeyError(f"section {stack[i].name} has no obs['{labels_key}']")
        Xk = np.concatenate([stack[i].X[:, gidx] for i in kept])
        yk = np.concatenate([np.asarray(stack[i].adata.obs[labels_key]).astype(str) for i in kept])
        clf = M.LabelClassifier().fit(Xk, yk)

    result = {
        "task": "missing section",
        "holdout": [stack[h].name for h in holdout],
        "kept": [stack[i].name for i in kept],
        "genes_scored": int(len(gidx)),
        "gene_selection": gene_note,
        "values": stack.normalize,
        "single_cell": bool(single_cell),
        "labels_key": labels_key,
        "hardware": hardware(),
        "methods": {},
    }
    if clf is not None:  # how well the classifier does on the measured held-out cells (upper bound)
        result["ari_measured"] = float(np.mean([
            M.adjusted_rand_score(np.asarray(stack[h].adata.obs[labels_key]).astype(str),
                                  clf.predict(stack[h].X[:, gidx])) for h in holdout]))
    for name, fn in methods.items():
        if progress:
            progress(f"fitting {name} on {len(kept)} sections")
        t0 = time.perf_counter()
        model, preds, fit_s = fit_predict(stack, fn, kept, holdout)
        predict_s = time.perf_counter() - t0 - fit_s
        rows, per = [], {}
        t0 = time.perf_counter()
        for h, full in zip(holdout, preds):
            s = stack[h]
            pred = full[:, gidx]
            labels = np.asarray(s.adata.obs[labels_key]) if clf is not None else None
            sc = score(s.X[:, gidx], pred, s.xy, labels=labels, classifier=clf, single_cell=single_cell, ssim=ssim)
            rows.append(sc)
            per[s.name] = sc
        entry = _mean_rows(rows)
        entry["fit_seconds"] = float(fit_s)
        entry["predict_seconds"] = float(predict_s + time.perf_counter() - t0)
        if clf is not None and hasattr(model, "latent"):
            entry["ari_domains"] = _latent_domain_ari(model, stack, kept, holdout, labels_key)
        entry["per_section"] = per
        result["methods"][name] = entry
    return result


def _latent_domain_ari(field, stack, kept, holdout, labels_key, seed: int = 0) -> float:
    """Unsupervised domains of a field: k-means (k = number of annotated classes in the kept
    sections) of its latent at the kept cells; ARI of the held-out cells' domains vs the labels."""
    from .checks import domain_ari, domains_from_points

    k = len(np.unique(np.concatenate([np.asarray(stack[i].adata.obs[labels_key]).astype(str) for i in kept])))
    dom = domains_from_points(field, stack.coords(kept), k, seed=seed)
    return float(np.mean([domain_ari(field, dom, stack[h], labels_key) for h in holdout]))


def interior_sections(stack) -> list[int]:
    """Indices of sections with a section below and above them (by z)."""
    order = np.argsort(stack.z)
    return sorted(int(i) for i in order[1:-1])


def leave_one_section_out(stack, fit_fn: Callable | None, sections: Sequence[int] | None = None,
                          **kwargs) -> dict:
    """:func:`leave_out` for each (interior by default) section in turn; metrics averaged over runs."""
    sections = interior_sections(stack) if sections is None else list(sections)
    runs = [leave_out(stack, fit_fn, [h], **kwargs) for h in sections]
    result = {k: v for k, v in runs[0].items() if k not in ("methods", "holdout", "kept", "ari_measured")}
    result["task"] = "missing section, each held out in turn"
    result["holdout"] = [r["holdout"][0] for r in runs]
    if "ari_measured" in runs[0]:
        result["ari_measured"] = float(np.mean([r["ari_measured"] for r in runs]))
    result["methods"] = {}
    for name in runs[0]["methods"]:
        rows = [{k: v for k, v in r["methods"][name].items() if k != "per_section"} for r in runs]
        entry = _mean_rows(rows)
        entry["per_section"] = {r["holdout"][0]: r["methods"][name]["per_section"][r["holdout"][0]] for r in runs}
        result["methods"][name] = entry
    return result


def drop_spots(stack, section: int, frac: float = 0.5, seed: int = 0):
    """``(stack_kept, removed_idx)``: a stack where ``section`` keeps a random ``1 - frac`` of its spots."""
    s = stack[section]
    rng = np.random.default_rng(seed)
    n_remove = int(round(frac * s.n_obs))
    removed = np.sort(rng.choice(s.n_obs, n_remove, replace=False))
    keep = np.setdiff1d(np.arange(s.n_obs), removed)
    out = stack.select(range(len(stack)))
    out.sections[section].adata = s.adata[keep].copy()
    return out, removed


def _methods(fit_fn, method_name: str, baselines: Sequence[str], fit_fns: dict | None) -> dict:
    """name → fit function, in reporting order: the field, the baselines, any extra variants."""
    methods = {} if fit_fn is None else {method_name: fit_fn}
    methods.update({b: BASELINES[b] for b in baselines})
    methods.update(fit_fns or {})
    return methods


def intra_section(stack, section: int, fit_fn: Callable | None, *, frac: float = 0.5, seed: int = 0,
                  baselines: Sequence[str] = ("knn2d",), genes="auto", other_sections: bool = False,
                  method_name: str = "inr", fit_fns: dict | None = None, single_cell: bool | None = None,
                  ssim: bool = True) -> dict:
    """Remove ``frac`` of the spots of ``section`` (fixed ``seed``), fit on the rest (that section only,
    or all non-excluded sections with ``other_sections``), predict the removed spots and score."""
    kept_stack, removed = drop_spots(stack, section, frac, seed)
    s = stack[section]
    sections = ([i for i in range(len(stack)) if not stack[i].excluded or i == section]
                if other_sections else [section])
    gidx, gene_note = select_genes(kept_stack, [section], genes)
    q_xyz = s.xyz[removed]
    truth = s.X[removed][:, gidx]
    if single_cell is None:
        single_cell = M.is_single_cell(s.xy)
    methods = _methods(fit_fn, method_name, baselines, fit_fns)
    result = {
        "task": f"missing spots ({frac:.0%} removed, seed {seed})",
        "section": s.name, "n_removed": int(len(removed)), "n_kept": int(s.n_obs - len(removed)),
        "genes_scored": int(len(gidx)), "gene_selection": gene_note, "values": stack.normalize,
        "single_cell": bool(single_cell), "hardware": hardware(), "methods": {},
    }
    for name, fn in methods.items():
        model, fit_s = fit_timed(fn, kept_stack, sections)
        t0 = time.perf_counter()
        pred = np.asarray(model.predict(q_xyz), dtype=np.float64)[:, gidx]
        entry = score(truth, pred, q_xyz[:, :2], single_cell=single_cell, ssim=ssim)
        entry["fit_seconds"] = float(fit_s)
        entry["predict_seconds"] = float(time.perf_counter() - t0)
        result["methods"][name] = entry
    return result


def missing_spots(stack, fit_fn: Callable | None, sections: Sequence[int], **kwargs) -> dict:
    """:func:`intra_section` for each of ``sections`` in turn (one fit each, the same ``frac`` and
    ``seed``); metrics averaged over them, each section's under ``per_section``."""
    runs = [intra_section(stack, i, fit_fn, **kwargs) for i in sections]
    result = {k: v for k, v in runs[0].items() if k not in ("methods", "section", "n_removed", "n_kept")}
    result["holdout"] = [r["section"] for r in runs]
    result["n_removed"] = {r["section"]: r["n_removed"] for r in runs}
    result["n_kept"] = {r["section"]: r["n_kept"] for r in runs}
    result["methods"] = {}
    for name in runs[0]["methods"]:
        entry = _mean_rows([r["methods"][name] for r in runs])
        entry["per_section"] = {r["section"]: r["methods"][name] for r in runs}
        result["methods"][name] = entry
    return result


def _cell(v: dict, c: str) -> str:
    x = v.get(c)
    return f"{x:.3f}" if isinstance(x, (int, float)) and np.isfinite(x) else "–"


def format_table(result: dict, metrics: Sequence[str] = METRICS + ("fit_seconds",)) -> str:
    """The methods × metrics table as aligned text (NaN/absent shown as '–')."""
    methods = result["methods"]
    cols = [m for m in metrics if any(m in v for v in methods.values())]
    head = ["method"] + cols
    rows = [[name] + [_cell(v, c) for c in cols] for name, v in methods.items()]
    w = [max(len(r[k]) for r in [head] + rows) for k in range(len(head))]
    lines = ["  ".join(h.ljust(w[k]) for k, h in enumerate(head))]
    lines.append("  ".join("-" * x for x in w))
    lines += ["  ".join(c.ljust(w[k]) for k, c in enumerate(r)) for r in rows]
    return "\n".join(lines)


def format_per_section(result: dict, metrics: Sequence[str] = METRICS) -> str:
    """One row per (held-out section, method): the scores :func:`format_table` averages."""
    methods = result["methods"]
    secs = list(result["holdout"])
    per = {name: v.get("per_section", {}) for name, v in methods.items()}
    cols = [m for m in metrics if any(m in row for p in per.values() for row in p.values())]
    head = ["section", "method"] + cols
    rows = [[sec, name] + [_cell(per[name].get(sec, {}), c) for c in cols] for sec in secs for name in methods]
    w = [max(len(r[k]) for r in [head] + rows) for k in range(len(head))]
    lines = ["  ".join(h.ljust(w[k]) for k, h in enumerate(head))]
    lines.append("  ".join("-" * x for x in w))
    lines += ["  ".join(c.ljust(w[k]) for k, c in enumerate(r)) for r in rows]
    return "\n".join(lines)
