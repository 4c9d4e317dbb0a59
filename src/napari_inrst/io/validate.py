"""Validation of one section: every check names the file and the problem."""

from __future__ import annotations

import numpy as np

from ..errors import InputError

SPATIAL_KEY = "spatial"
#: a section of a stack needs at least this many cells/spots (fewer: no 2D layout to align or fit)
MIN_SPOTS = 10
#: a stack needs at least this many genes shared by its sections
MIN_SHARED_GENES = 3


def _values(X) -> np.ndarray:
    """The stored values of a dense or sparse matrix (no densification)."""
    if hasattr(X, "data") and hasattr(X, "indptr"):
        return np.asarray(X.data)
    return np.asarray(X)


def validate_layout(adata, source, *, spatial_key: str = SPATIAL_KEY):
    """The checks that need no expression values: non-empty, finite 2D coordinates in
    ``obsm[spatial_key]`` (stored back as float64 where writable), unique gene names, unique
    cell/spot names."""
    if adata.n_obs == 0:
        raise InputError(source, "empty section: it has no cells/spots")
    if adata.n_vars == 0:
        raise InputError(source, "empty section: it has no genes")
    if spatial_key not in adata.obsm:
        raise InputError(
            source,
            f"no obsm['{spatial_key}'] with the 2D cell/spot coordinates "
            f"(obsm keys: {sorted(adata.obsm.keys()) or 'none'})",
        )
    xy = np.asarray(adata.obsm[spatial_key])
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise InputError(
            source, f"obsm['{spatial_key}'] must be n×2 (x, y); it has shape {tuple(xy.shape)}"
        )
    try:
        xy = xy.astype(np.float64)
    except (TypeError, ValueError):
        raise InputError(source, f"obsm['{spatial_key}'] is not numeric") from None
    bad = ~np.isfinite(xy).all(axis=1)
    if bad.any():
        raise InputError(
            source,
            f"{int(bad.sum())} cells/spots have NaN or infinite coordinates "
            f"(first: '{adata.obs_names[np.flatnonzero(bad)[0]]}')",
        )
    if not adata.isbacked:
        adata.obsm[spatial_key] = xy
    names = adata.var_names.astype(str)
    if not names.is_unique:
        # refused, not renamed: two columns of one name are a mistake upstream (a merge, a
        # header-less CSV), and which one to keep is not ours to guess
        dup = names[names.duplicated()].unique()
        raise InputError(
            source, f"{len(dup)} duplicate gene names (first: '{dup[0]}'); gene names must be unique "
                    "(var_names: rename or drop the duplicates, e.g. anndata's var_names_make_unique())"
        )
    if not adata.obs_names.is_unique:
        dup = adata.obs_names[adata.obs_names.duplicated()]
        raise InputError(
            source, f"{len(dup)} duplicate cell/spot names (first: '{dup[0]}'); names must be unique"
        )
    return adata


def validate_section(adata, source, *, counts_expected: bool = False, spatial_key: str = SPATIAL_KEY):
    """Check one section in place and return it.

    Ensures a non-empty AnnData with unique cell/spot names, finite 2D coordinates in
    ``obsm[spatial_key]`` (stored back as float64) and finite expression; with
    ``counts_expected`` also non-negative expression. Raises :class:`InputError`.
    """
    validate_layout(adata, source, spatial_key=spatial_key)
    vals = _values(adata.X)
    if not np.issubdtype(vals.dtype, np.number):
        raise InputError(source, f"expression matrix is not numeric (dtype {vals.dtype})")
    if not np.isfinite(vals).all():
        raise InputError(source, f"expression has {int((~np.isfinite(vals)).sum())} NaN or infinite values")
    if counts_expected and vals.size and vals.min() < 0:
        raise InputError(
            source,
            f"expression has negative values (min {vals.min():g}) but counts are expected "
            "for normalize='log1p'; pass normalize='none' for already-normalized values",
        )
    return adata


def validate_stack_section(xy, source):
    """The checks a section must pass to join a stack (whether or not it is aligned): at least
    :data:`MIN_SPOTS` cells/spots, not all on one line."""
    xy = np.asarray(xy, dtype=np.float64)
    if len(xy) < MIN_SPOTS:
        raise InputError(source, f"has {len(xy)} spots; a section of a stack needs at least {MIN_SPOTS}")
    c = xy - xy.mean(axis=0)
    ext = float(np.ptp(xy, axis=0).max())
    big = float(np.abs(xy).max())
    res = float(np.spacing(big))
    if ext > 0 and res > 1e-6 * ext:
        # float64 itself cannot hold these coordinates finely enough (centring comes too late)
        raise InputError(source, f"coordinates reach {big:.3g} µm, where numbers are resolved only to "
                                 f"{res:.3g} µm, too coarse for a section {ext:.3g} µm wide; subtract "
                                 "the offset (or check --unit-factor)")
    sv = np.linalg.svd(c, compute_uv=False)
    if sv[0] <= 0 or sv[-1] / sv[0] < 1e-6:
        raise InputError(source, "has collinear coordinates (all spots on one line); a section must "
                                 "span an area")


def validate_shared_genes(genes, sources, gene_policy: str):
    if len(genes) < MIN_SHARED_GENES:
        what = "shared genes" if gene_policy == "intersection" else "genes"
        raise InputError(", ".join(map(str, sources)) or None,
                         f"only {len(genes)} {what}; a stack needs at least {MIN_SHARED_GENES}")


def validate_z_precision(z, sources):
    """z positions must stay distinct in the network's float32 frame after centring in float64."""
    z = np.asarray(z, dtype=np.float64)
    if len(z) < 2:
        return
    zc = (z - (z.min() + z.max()) / 2).astype(np.float32)
    order = np.argsort(z, kind="stable")
    for a, b in zip(order[:-1], order[1:]):
        if z[a] != z[b] and zc[a] == zc[b]:
            raise InputError(sources[b], f"its z ({z[b]:.17g} µm) cannot be told apart from that of "
                                         f"{sources[a]} ({z[a]:.17g} µm) at the field's precision; "
                                         "give z positions that differ by more")
