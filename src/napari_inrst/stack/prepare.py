"""Prepare a section stack for a field: which genes the field models (one rule for the CLI and
the napari widgets).

``napari-inrst fit`` / ``evaluate`` and the Train widget all call :func:`prepare_for_field`, so
the same data give the same gene panel whichever way the user trains: every gene up to
:data:`DEFAULT_GENE_CAP` (never fewer than :data:`MIN_DEFAULT_GENES` when the data have them),
else the :data:`TOP_EXPRESSED` most expressed genes plus the most variable ones.

No Qt and no torch here.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import InputError

#: genes a field models by default (whole-transcriptome data are cut to this many)
DEFAULT_GENE_CAP = 2000
MIN_DEFAULT_GENES = 500
TOP_EXPRESSED = 200


def model_genes(stack, n: int | None) -> tuple[np.ndarray, str] | None:
    """Indices of the genes to model: the most expressed ones plus the most variable, ``n`` in
    all (``None``: all genes up to :data:`DEFAULT_GENE_CAP`, never fewer than 500 when the data
    have them), and a sentence saying so; ``None`` when every gene is kept."""
    from . import highly_variable_genes

    total = stack.n_genes
    cap = DEFAULT_GENE_CAP if n is None else int(n)
    if n is None:
        cap = max(cap, min(MIN_DEFAULT_GENES, total))
    if cap < 1:
        raise InputError(None, f"--genes must be ≥ 1, got {n}")
    if cap >= total:
        return None
    X = stack.expression()
    n_top = min(TOP_EXPRESSED, cap // 4)
    top = np.argsort(-X.mean(0), kind="stable")[:n_top]
    hvg = highly_variable_genes(X, min(total, cap + n_top))
    keep = list(dict.fromkeys(list(top) + [int(g) for g in hvg]))[:cap]
    return np.sort(np.array(keep, dtype=int)), f"{n_top} most expressed + most variable, {len(keep)} of {total}"


def restrict_genes(stack, keep, why: str = ""):
    """Keep only the genes at indices ``keep`` in the in-memory ``stack`` (in place); returns it."""
    keep = np.asarray(keep, dtype=int)
    for s in stack.sections:
        s.adata = s.adata[:, keep].copy()
    stack.genes = [stack.genes[k] for k in keep]
    stack.report["n_genes_kept"] = len(stack.genes)
    if why:
        stack.report["gene_selection"] = why
    return stack


def select_model_genes(stack, n: int | None):
    """Restrict the in-memory ``stack`` (in place) to :func:`model_genes`; returns the stack."""
    chosen = model_genes(stack, n)
    if chosen is None:
        return stack
    return restrict_genes(stack, *chosen)


def prepare_for_field(stack, genes: int | None = None, *, copy: bool = False,
                      log: Callable[[str], None] | None = None):
    """The stack a field is trained on: the genes of :func:`model_genes` (``genes``: how many;
    ``None``: the default rule). ``copy=True`` leaves ``stack`` untouched (the napari layers
    keep showing every gene) and returns a new stack sharing no AnnData with it.

    ``log`` receives one line saying which genes were chosen and why.
    """
    chosen = model_genes(stack, genes)
    if copy:
        stack = stack.select(range(len(stack)))
        if chosen is None:
            for s in stack.sections:
                s.adata = s.adata.copy()
    if chosen is None:
        if log is not None:
            log(f"modeling all {stack.n_genes} genes")
        return stack
    restrict_genes(stack, *chosen)
    if log is not None:
        log(f"modeling {stack.n_genes} genes: {chosen[1]}")
    return stack
