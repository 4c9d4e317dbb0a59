"""npe2 contributions that need no Qt: readers (sections; OME-Zarr volumes written by this plugin)
and sample data (see ``napari.yaml``)."""

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


def _is_volume_zarr(p: Path) -> bool:
    """An OME-Zarr written by napari-inrst (``napari-inrst render --volume``, Save volume): a
    directory whose ``.zattrs`` carries the ``napari_inrst`` marker. Only that file is read."""
    from .render.export import is_inrst_zarr

    return p.is_dir() and is_inrst_zarr(p)


def read_volume_layers(path):
    """Reader: an OME-Zarr written by napari-inrst → one Image layer per gene, backed lazily by the
    zarr arrays (dask; every pyramid level, multiscale), with voxel size and origin in µm."""
    if isinstance(path, list):
        out = []
        for p in path:
            out.extend(read_volume_layers(p))
        return out
    from .render.export import open_volume_levels

    p = Path(os.fspath(path))
    try:
        levels, meta = open_volume_levels(p)
    except InputError as exc:
        _notify_error(exc)
        return [(None,)]
    except Exception as exc:  # noqa: BLE001 - a damaged store: one line, never a traceback
        _notify_error(InputError(p, f"cannot read this OME-Zarr ({type(exc).__name__}: {exc})"))
        return [(None,)]
    genes = meta["genes"] or [f"c{i}" for i in range(levels[0].shape[0])]
    lims = meta["contrast_limits"]
    cmaps = ["magma", "magenta", "green", "cyan", "yellow", "red", "blue"]
    stem = p.name.split(".")[0]
    out = []
    for i, gene in enumerate(genes):
        data = [lvl[i] for lvl in levels]  # dask slicing: still lazy
        kwargs = {
            "name": f"{gene} · {stem}",
            "scale": tuple(meta["scale_zyx"]),
            "translate": tuple(meta["translate_zyx"]),
            "units": "µm",
            "axis_labels": ("z", "y", "x"),
            "colormap": cmaps[i % len(cmaps)],
            "blending": "translucent_no_depth" if i == 0 else "additive",
            "rendering": "mip",
            "metadata": {"inrst_volume": str(p), "gene": gene},
        }
        if len(data) > 1:
            kwargs["multiscale"] = True
        else:
            data = data[0]
        if i < len(lims):
            kwargs["contrast_limits"] = tuple(lims[i])
        out.append((data, kwargs, "image"))
    return out


def _is_spatialdata(p: Path) -> bool:
    """A SpatialData .zarr store (sections = the regions its table annotates; reads root metadata only)."""
    from .io.spatialdata import is_spatialdata_store

    return is_spatialdata_store(p)


def get_reader(path):
    """npe2 reader hook: return a reader function for paths we understand, else None."""
    paths = path if isinstance(path, list) else [path]
    if all(_is_volume_zarr(Path(os.fspath(p))) for p in paths):
        return read_volume_layers
    for p in paths:
        p = Path(os.fspath(p))
        ok = (
            p.suffix.lower() == ".h5ad"
            or p.name.endswith("_counts.csv")
            or (p.is_dir() and ((p / "filtered_feature_bc_matrix.h5").exists() or any(p.glob("*.h5ad"))))
            or _is_spatialdata(p)
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
