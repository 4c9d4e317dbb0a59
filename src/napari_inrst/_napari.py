"""npe2 contributions that need no Qt: readers and sample data (see ``napari.yaml``)."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError
from .layers import stack_layer_data

#: z spacing (µm) used when files do not record their z.
DEFAULT_SPACING_UM = 10.0


def _notify_error(exc: Exception):
    try:
        from napari.utils.notifications import show_error

        show_error(str(exc))
    except Exception:  # noqa: BLE001 - notification must never mask the error itself
        pass


def _stack_from_path(path):
    from .io.readers import read_csv_pair, read_path, SectionInput
    from .stack import stack_from_inputs

    p = Path(path)
    if p.is_file() and p.name.endswith("_counts.csv"):
        coords = p.with_name(p.name[: -len("_counts.csv")] + "_coords.csv")
        adata = read_csv_pair(p, coords)
        inputs = [SectionInput(p.name[: -len("_counts.csv")], adata, str(p))]
    else:
        inputs = read_path(p)
    vals = [a.adata.X for a in inputs]
    normalize = "log1p" if all(_looks_like_counts(v) for v in vals) else "none"
    return stack_from_inputs(inputs, spacing=DEFAULT_SPACING_UM, normalize=normalize)


def _looks_like_counts(X, n: int = 20000) -> bool:
    import numpy as np

    v = X.data if hasattr(X, "data") and hasattr(X, "indptr") else np.asarray(X).ravel()
    v = np.asarray(v[:n])
    return bool(v.size == 0 or ((v >= 0).all() and np.allclose(v, np.round(v))))


def read_sections_layers(path):
    """Reader: a path → one Points layer per section (errors become a napari notification)."""
    if isinstance(path, list):
        out = []
        for p in path:
            out.extend(read_sections_layers(p))
        return out
    try:
        stack = _stack_from_path(path)
    except InputError as exc:
        _notify_error(exc)
        return [(None,)]  # npe2: a reader that handled the path but produced nothing
    return stack_layer_data(stack)


def get_reader(path):
    """npe2 reader hook: return a reader function for paths we understand, else None."""
    paths = path if isinstance(path, list) else [path]
    for p in paths:
        p = Path(os.fspath(p))
        ok = (
            p.suffix.lower() == ".h5ad"
            or p.name.endswith("_counts.csv")
            or (p.is_dir() and ((p / "filtered_feature_bc_matrix.h5").exists() or any(p.glob("*.h5ad"))))
        )
        if not ok:
            return None
    return read_sections_layers


def synthetic_sample():
    """Sample data: the synthetic tissue, 8 measured sections (misplaced, one mirrored)."""
    from .sample import sample_stack

    stack, _ = sample_stack()
    return stack_layer_data(stack, gene="LayerB")


def synthetic_sample_aligned():
    """Sample data: the synthetic tissue with every section in its true place."""
    from .sample import sample_stack

    stack, _ = sample_stack(misplace=False)
    return stack_layer_data(stack, gene="LayerB")
