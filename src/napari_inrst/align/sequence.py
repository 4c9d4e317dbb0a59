"""Align every section of a stack into the frame of a reference section (chained pairs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..errors import InputError

METHODS = ("rigid", "similarity", "none")
MIN_SPOTS = 10
MIN_GENES = 3


class AlignCancelled(Exception):
    """Raised by :func:`align_stack` when ``should_stop()`` returned True."""


@dataclass
class AlignResult:
    """Per-section 3×3 transforms (input coordinates → stack frame) and per-pair diagnostics."""

    matrices: list  # one 3×3 float array per section, in stack order
    mirrored: list  # per section: its transform includes a reflection
    residual_um: list  # per adjacent pair (i, i+1): median distance of matched spots after alignment
    reference: int
    method: str = "rigid"
    names: list = field(default_factory=list)
    pair_scores: list = field(default_factory=list)  # per adjacent pair: fit score (0–1)
    #: ``method="nonrigid"``: per section a :class:`~.deform.Deformation` or None (the reference)
    deformations: list | None = None

    def apply(self, stack):
        """Write the matrices (and the deformations, when the result has them) into ``stack``;
        returns the stack."""
        stack.set_transforms([np.asarray(m, dtype=np.float64) for m in self.matrices])
        if self.deformations is not None:
            from .deform import set_deformations

            set_deformations(stack, self.deformations)
        return stack

    def to_json(self) -> list[dict]:
        return transforms_json(self.names, self.matrices)


def transforms_json(names: Sequence[str], matrices: Sequence) -> list[dict]:
    """``[{"section": name, "matrix": [[a, b, tx], [c, d, ty], [0, 0, 1]]}, …]`` in input order."""
    if len(names) != len(matrices):
        raise ValueError(f"{len(names)} names for {len(matrices)} matrices")
    out = []
    for n, m in zip(names, matrices):
        m = np.asarray(m, dtype=np.float64)
        if m.shape != (3, 3):
            raise ValueError(f"matrix of {n} must be 3×3, got {m.shape}")
        out.append({"section": str(n), "matrix": [[float(v) for v in row] for row in m]})
    return out


def check_sections(stack, method: str = "rigid", reference=None) -> int:
    """Validate a stack for alignment; returns the reference index. Raises :class:`InputError`."""
    n = len(stack)
    if method not in METHODS:
        raise InputError(None, f"alignment method must be one of {', '.join(METHODS)}; got '{method}'")
    if n < 2:
        names = ", ".join(stack.names) or None
        raise InputError(names, f"alignment needs at least 2 sections; got {n}")
    ref = n // 2 if reference is None else int(reference)
    if not 0 <= ref < n:
        raise InputError(None, f"reference section {reference} is out of range: give 0 to {n - 1} (0-based)")
    if stack.n_genes < MIN_GENES:
        raise InputError(", ".join(stack.names), f"only {stack.n_genes} shared genes; alignment needs at "
                                                 f"least {MIN_GENES}")
    for s in stack.sections:
        xy = s.xy_input
        if len(xy) < MIN_SPOTS:
            raise InputError(s.name, f"has {len(xy)} spots; alignment needs at least {MIN_SPOTS}")
        if not np.all(np.isfinite(xy)):
            raise InputError(s.name, "has non-finite coordinates")
        c = xy - xy.mean(axis=0)
        sv = np.linalg.svd(c, compute_uv=False)
        if sv[0] <= 0 or sv[-1] / sv[0] < 1e-6:
            raise InputError(s.name, "has collinear coordinates (all spots on one line); a 2D motion "
                                     "cannot be fitted")
    return ref


def _expression(section, normalize: str) -> np.ndarray:
    X = section.X
    if normalize == "none" and X.size and X.min() >= 0:
        X = np.log1p(X)  # values as given (e.g. volume-normalized): compress like log-counts
    return X


def align_stack(stack, reference=None, method: str = "rigid", *, progress: Callable | None = None,
                should_stop: Callable | None = None, seed: int = 0, allow_mirror: bool = True) -> AlignResult:
    """Align all sections of ``stack`` into the frame of section ``reference`` (default: the middle one).

    Adjacent pairs are aligned (section i onto its neighbour towards the reference) with
    :func:`~napari_inrst.align.pairwise.align_pair` and chained; the reference keeps the
    identity. ``method``: ``"rigid"`` (rotation + translation, mirror detected), ``"similarity"``
    (adds a uniform scale) or ``"none"`` (identities, residuals still measured). ``progress(done,
    total, message)`` is called after each pair; ``should_stop()`` returning True raises
    :class:`AlignCancelled`. The stack is not modified: call ``result.apply(stack)``.
    Raises :class:`~napari_inrst.errors.InputError` naming the section for unusable input.
    """
    steps = iter_align_stack(stack, reference, method, seed=seed, allow_mirror=allow_mirror)
    while True:
        if should_stop is not None and should_stop():
            steps.close()
            raise AlignCancelled("alignment cancelled")
        try:
            done, total, msg = next(steps)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(done, total, msg)


def iter_align_stack(stack, reference=None, method: str = "rigid", *, seed: int = 0,
                     allow_mirror: bool = True):
    """Generator form of :func:`align_stack`: yields ``(done, total, message)`` after each step and
    returns the :class:`AlignResult` (``result = yield from iter_align_stack(...)``). Stop
    iterating to cancel. Validation happens before the first yield."""
    from .matching import expressed_genes, pair_features
    from ..stack import apply_transform, estimate_spacing
    from .pairwise import align_pair, matched_distances

    ref = check_sections(stack, method, reference)
    n = len(stack)
    normalize = getattr(stack, "normalize", "log1p")
    Xs = [None] * n

    def X(i):
        if Xs[i] is None:
            Xs[i] = _expression(stack[i], normalize)
        return Xs[i]

    # pairs: (moving, fixed) towards the reference, nearest to the reference first
    order = [(i, i + 1) for i in range(ref - 1, -1, -1)] + [(i, i - 1) for i in range(ref + 1, n)]
    total = len(order) + 1
    feats = {}  # adjacent pair (lo, hi) → unit niche profiles (F_lo, F_hi) of its fit

    def features(i, j):
        lo, hi = min(i, j), max(i, j)
        if (lo, hi) not in feats:
            a, b = stack[lo], stack[hi]
            Fa, Fb, ng = pair_features(a.xy_input, X(lo), b.xy_input, X(hi),
                                       rng=np.random.default_rng([seed, lo, hi]))
            if Fa is None:
                raise InputError(f"{a.name}, {b.name}", f"only {ng} genes are expressed in both sections; "
                                                        "alignment needs at least 3 shared genes")
            feats[(lo, hi)] = (Fa, Fb)
        F = feats[(lo, hi)]
        return F if i < j else (F[1], F[0])

    for i in range(n - 1):  # check every pair's shared genes before any long work
        ng = len(expressed_genes(X(i), X(i + 1)))
        if ng < MIN_GENES:
            raise InputError(f"{stack[i].name}, {stack[i + 1].name}",
                             f"only {ng} genes are expressed in both sections; alignment needs at least "
                             f"{MIN_GENES} shared genes")
    pair = {}
    for done, (i, j) in enumerate(order):
        a, b = stack[i], stack[j]
        rng = np.random.default_rng([seed, i, j])
        if method == "none":
            pair[(i, j)] = (np.eye(3), float("nan"))
        else:
            r = align_pair(a.xy_input, X(i), b.xy_input, X(j), method=method, rng=rng,
                           allow_mirror=allow_mirror, name_a=a.name, name_b=b.name)
            pair[(i, j)] = (r.matrix, r.score)
            lo, hi = min(i, j), max(i, j)  # residuals below use the features of the final fit
            feats[(lo, hi)] = r.features if i < j else r.features[::-1]
        yield done + 1, total, f"aligned {a.name} onto {b.name}"

    mats = [None] * n
    mats[ref] = np.eye(3)
    for i, j in order:  # neighbours towards the reference come first
        mats[i] = mats[j] @ pair[(i, j)][0]

    # residuals of adjacent pairs in the stack frame (same matching as the fit)
    residual, scores = [], []
    for i in range(n - 1):
        a, b = stack[i], stack[i + 1]
        Fa, Fb = features(i, i + 1)
        ya, yb = apply_transform(mats[i], a.xy_input), apply_transform(mats[i + 1], b.xy_input)
        h = max(estimate_spacing(ya), estimate_spacing(yb))
        residual.append(float(np.median(matched_distances(ya, yb, Fa, Fb, h))))
        key = (i, i + 1) if (i, i + 1) in pair else (i + 1, i)
        scores.append(pair[key][1])
    yield total, total, "done"
    mirrored = [bool(np.linalg.det(m[:2, :2]) < 0) for m in mats]
    return AlignResult(matrices=[np.asarray(m, dtype=np.float64) for m in mats], mirrored=mirrored,
                       residual_um=residual, reference=ref, method=method, names=list(stack.names),
                       pair_scores=scores)
