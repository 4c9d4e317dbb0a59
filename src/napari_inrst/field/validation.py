"""The validation report of a fit: the network, the interpolant and their blends scored on the
task-mimicking validation split, and the blend weight chosen there (numpy; torch only to run the
network). :mod:`.report` turns the report into words."""

from __future__ import annotations

import numpy as np

#: blend weights tried on the validation split (w of the interpolant)
BLEND_GRID = tuple(np.round(np.linspace(0.0, 1.0, 21), 3))
#: genes the validation score is computed on (the most expressed), like EVALUATION.md's sparse-count rule
SCORE_GENES = 200
#: interpolant basis: at most this many components, and at most this many stored numbers (cells × q)
INTERP_RANK = 256
INTERP_VALUES = 50_000_000
#: cells per section the sections interpolant averages (the ``adjacent`` baseline's k)
SECTION_K = 3
#: shares of the sections interpolant tried in the interpolant (0 = 3D kNN alone, 1 = sections alone)
MIX_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


def score_genes(data) -> np.ndarray:
    g = np.argsort(-np.asarray(data.mean, dtype=np.float64), kind="stable")[:SCORE_GENES]
    return np.sort(g)


def gene_rows(data, rows, genes) -> np.ndarray:
    """Targets (centred, ÷ std) of ``rows`` at ``genes`` (projected data: through the basis)."""
    if getattr(data, "projected", False):
        return data.targets[rows] @ data.basis[genes].T
    return data.targets[rows][:, genes]


def interp_basis(data, rows, seed: int):
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


def net_gene_rows(net, data, xyz, genes) -> np.ndarray:
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


def validation_report(net, data, task, tr, va, pos, names, cfg) -> dict:
    """Score the network, the interpolants and their blends on the validation split; choose the
    interpolant (for a stack: 3D kNN, the sections' own, or a mixture of the two, see
    :class:`~.interpolant.Interpolant`) and the blend weight. Scores: per-gene Pearson over the held-out cells (the most expressed
    genes)."""
    from ..measure.baselines import idw
    from ..measure.metrics import pearson_per_gene
    from .interpolant import Interpolant

    dims = 3 if data.z_spacing is not None else 2
    k = 5 if dims == 3 else 4
    genes = score_genes(data)
    truth = gene_rows(data, va, genes)
    qxyz = data.xyz[va].astype(np.float64)
    txyz = data.xyz[tr].astype(np.float64)
    f = net_gene_rows(net, data, data.xyz[va], genes)
    V, coef = interp_basis(data, tr, cfg.seed)
    q = coef.shape[1]
    # one neighbour search per interpolant serves both what the model stores (the low-rank
    # coefficients, first q columns) and the baseline on the scored genes, exactly (the rest)
    both = np.hstack([coef, gene_rows(data, tr, genes)])
    kn = idw(txyz[:, :dims], both, qxyz[:, :dims], k)
    knn, base = kn[:, :q] @ V[genes].T, kn[:, q:]  # base: knn3d / knn2d
    # the interpolants as the model stores them: 3D kNN, the sections' own, and mixtures of the
    # two (mix = the share of the sections interpolant)
    stored = {0.0: knn}
    inter_sec = None
    if dims == 3 and len(np.unique(data.xyz[tr, 2])) >= 2:
        sk = Interpolant(txyz, both, np.eye(both.shape[1]), 1.0, k_sections=SECTION_K, mix=1.0)(qxyz)
        sec = sk[:, :q] @ V[genes].T
        stored.update({float(m): (1.0 - m) * knn + m * sec for m in MIX_GRID[1:]})
        inter_sec = pearson_per_gene(truth, sk[:, q:])  # the adjacent-sections baseline
    grid = BLEND_GRID if cfg.blend else (0.0, 1.0)
    # w = 0 is the network alone, whatever the interpolant: scored once, as (0, 0)
    scores = {(mix, float(w)): pearson_per_gene(truth, (1.0 - w) * f + w * ip)
              for mix, ip in stored.items() for w in grid if w > 0 or mix == 0.0}
    if cfg.blend:  # ties: the smaller w, then the smaller share of the sections interpolant
        best_mix, best_w = max(scores, key=lambda mw: (round(scores[mw], 4), -mw[1], -mw[0]))
    else:
        best_mix, best_w = 0.0, 0.0
    inter = pearson_per_gene(truth, base)
    field = scores[(best_mix, best_w)]
    best_inter = max(inter, inter_sec if inter_sec is not None else -np.inf)
    out = {
        "task": task,
        "metric": f"per-gene Pearson over the held-out {'cells' if task.endswith('sections') else 'spots'}, "
                  f"{len(genes)} most expressed genes",
        "sections": [names[p] for p in pos],
        "n_cells": int(len(va)),
        "genes_scored": int(len(genes)),
        "field": round(float(field), 4),
        "network": round(float(scores[(0.0, 0.0)]), 4),
        "interpolation": round(float(inter), 4),
        "interpolant_stored": round(float(scores[(best_mix, 1.0)]), 4),
        "baseline": "knn3d" if dims == 3 else "knn2d",
        "blend_weight": float(best_w),
        "blend_mix": float(best_mix),
        "better": bool(field > best_inter),
    }
    if inter_sec is not None:
        out["interpolation_sections"] = round(float(inter_sec), 4)
    return out
