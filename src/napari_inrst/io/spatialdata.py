"""Read SpatialData ``.zarr`` stores (scverse ``spatialdata``) as sections (no Qt, no torch).

Contract (the CLI, the napari reader and external scripts rely on it):

* the store's table (``table`` when there are several, or ``table=NAME``) annotates one shapes or
  points element per section through its ``region_key`` (``table.uns['spatialdata_attrs']``);
* each row's position is the centroid of its shape/point (matched by the ``instance_key``) in
  the coordinate system ``coordinate_system`` (default ``global``), times ``unit_factor`` → µm;
* sections are the annotated regions in sorted order, or, with ``section_key``, the sorted labels
  of that table column (a store with one region and a section column);
* z comes from the table column ``z_key`` (constant within a section), else from a constant
  ``obs['z']`` column, else it is left to the caller (``--z``);
* expression is the table's ``X``, or ``layers[layer]``.

``spatialdata`` is an optional dependency (``pip install 'napari-inrst[spatialdata]'``); it is
imported only when a store is read. :func:`is_spatialdata_store` needs only the store's root
metadata file.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import InputError
from .readers import SectionInput
from .validate import validate_section

#: what users are told when the optional package is missing
MISSING_MESSAGE = ("reading or writing SpatialData stores needs the optional package 'spatialdata': "
                   "pip install 'napari-inrst[spatialdata]'")


def import_spatialdata(path=None):
    """``spatialdata``, or :class:`InputError` saying how to install it."""
    try:
        import spatialdata
    except ImportError as exc:
        if getattr(exc, "name", None) == "spatialdata":
            raise InputError(path, MISSING_MESSAGE) from None
        # installed, but one of its own dependencies fails to import (e.g. an old spatialdata
        # whose xarray-schema needs setuptools' removed pkg_resources)
        raise InputError(path, f"the installed 'spatialdata' fails to import ({exc}); "
                               "pip install -U 'napari-inrst[spatialdata]'") from None
    return spatialdata


def _root_attrs(p: Path) -> dict | None:
    for name, key in (("zarr.json", "attributes"), (".zattrs", None)):
        try:
            meta = json.loads((p / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict):
            return meta.get(key, {}) if key else meta
    return None


def is_spatialdata_store(path) -> bool:
    """True for a folder that looks like a SpatialData zarr store (reads only its root metadata)."""
    p = Path(os.fspath(path))
    if not p.is_dir():
        return False
    attrs = _root_attrs(p)
    if attrs is None:
        return False
    if isinstance(attrs, dict) and "spatialdata_attrs" in attrs:
        return True
    # stores of older spatialdata versions carry no root attributes: element groups identify them
    return "multiscales" not in attrs and any((p / g).is_dir() for g in ("tables", "table")) and any(
        (p / g).is_dir() for g in ("shapes", "points"))


def _first_line(exc: Exception) -> str:
    return ((str(exc).splitlines() or [type(exc).__name__])[0] or type(exc).__name__)[:160]


def _pick_table(sdata, path, table: str | None):
    tables = dict(sdata.tables)
    if not tables:
        raise InputError(path, "SpatialData store without a table (expression must be in a table "
                               "annotating the sections' shapes or points)")
    if table is not None:
        if table not in tables:
            raise InputError(path, f"no table '{table}' (tables: {', '.join(sorted(tables))})")
        return table, tables[table]
    if len(tables) == 1:
        return next(iter(tables.items()))
    if "table" in tables:
        return "table", tables["table"]
    annotating = [k for k in sorted(tables) if _table_keys(tables[k]) is not None]
    if len(annotating) == 1:
        return annotating[0], tables[annotating[0]]
    raise InputError(path, f"{len(tables)} tables ({', '.join(sorted(tables))}); choose one with --table")


def _table_keys(adata):
    attrs = adata.uns.get("spatialdata_attrs")
    if not isinstance(attrs, dict):
        return None
    rk, ik = attrs.get("region_key"), attrs.get("instance_key")
    if rk is None or ik is None:
        return None
    return str(rk), str(ik)


def _element(sdata, name: str, path):
    for kind in ("shapes", "points"):
        elems = getattr(sdata, kind)
        if name in elems:
            return kind, elems[name]
    for kind in ("labels", "images"):
        if name in getattr(sdata, kind):
            raise InputError(path, f"region '{name}' is a {kind[:-1]} element; napari-inrst reads "
                                   "tables that annotate shapes or points")
    raise InputError(path, f"the table annotates region '{name}', which the store does not hold")


def _centroids(sd, element, name: str, kind: str, coordinate_system: str, path):
    """(index, (n, 2) x/y) of an element's shapes/points in ``coordinate_system``."""
    from spatialdata.transformations import get_transformation

    systems = get_transformation(element, get_all=True) or {}
    if coordinate_system not in systems:
        have = ", ".join(sorted(systems)) or "none"
        raise InputError(path, f"{kind} element '{name}' has no coordinate system '{coordinate_system}' "
                               f"(has: {have}); choose one with --coordinate-system")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "index not monotonic" notices about its own frames
            cent = sd.get_centroids(element, coordinate_system=coordinate_system)
            if hasattr(cent, "compute"):
                cent = cent.compute()
    except Exception as exc:  # noqa: BLE001 - geometry/transform errors of a damaged element
        raise InputError(path, f"cannot take the centroids of {kind} element '{name}' ({_first_line(exc)})") from None
    if "x" not in cent.columns or "y" not in cent.columns:
        raise InputError(path, f"{kind} element '{name}' has no x/y coordinates")
    xy = cent[["x", "y"]].to_numpy(dtype=np.float64)
    return cent.index, xy


def _match(index, ids, name: str, path) -> np.ndarray:
    import pandas as pd

    index = pd.Index(index)
    if not index.is_unique:
        raise InputError(path, f"element '{name}' has duplicate instance ids")
    pos = index.get_indexer(pd.Index(ids))
    if (pos < 0).any():  # e.g. integer ids in the element, strings in the table
        pos = pd.Index(index.astype(str)).get_indexer(pd.Index(pd.Index(ids).astype(str)))
    if (pos < 0).any():
        first = ids[int(np.argmax(pos < 0))]
        raise InputError(path, f"{int((pos < 0).sum())} table rows annotate instances missing from "
                               f"element '{name}' (first: '{first}')")
    return pos


def _constant(values, what: str, src):
    try:
        v = np.unique(np.asarray(values, dtype=float))
    except (TypeError, ValueError):
        raise InputError(src, f"{what} must be numbers") from None
    if len(v) != 1 or not np.isfinite(v[0]):
        raise InputError(src, f"{what} is not constant within the section")
    return float(v[0])


def read_spatialdata(path, *, table: str | None = None, coordinate_system: str = "global",
                     layer: str | None = None, section_key: str | None = None, z_key: str | None = None,
                     counts_expected: bool = False, unit_factor: float = 1.0) -> list[SectionInput]:
    """Read a SpatialData store into one :class:`SectionInput` per section (see the module doc).

    Coordinates and z are multiplied by ``unit_factor``. Each section's AnnData has the table's
    rows of that section, ``X`` (or ``layers[layer]``) as expression, the table's ``obs``/``var``
    and ``obsm['spatial']`` = the centroids.
    """
    path = Path(os.fspath(path))
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if not is_spatialdata_store(path):
        raise InputError(path, "not a SpatialData .zarr store (no spatialdata metadata at its root)")
    sd = import_spatialdata(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # version/format notices of spatialdata, zarr, dask
            sdata = sd.read_zarr(path)
    except Exception as exc:  # noqa: BLE001 - zarr/parquet/pydantic raise many types
        raise InputError(path, f"not a readable SpatialData store ({type(exc).__name__}: {_first_line(exc)})") from None
    tname, tab = _pick_table(sdata, path, table)
    keys = _table_keys(tab)
    if keys is None:
        raise InputError(path, f"table '{tname}' annotates no element (no region_key/instance_key "
                               "in uns['spatialdata_attrs'])")
    region_key, instance_key = keys
    for k in (region_key, instance_key):
        if k not in tab.obs:
            raise InputError(path, f"table '{tname}' has no obs column '{k}' named by its spatialdata_attrs")
    if layer is not None and layer not in tab.layers:
        raise InputError(path, f"table '{tname}' has no layer '{layer}' "
                               f"(layers: {', '.join(tab.layers.keys()) or 'none'})")
    if section_key is not None and section_key not in tab.obs:
        raise InputError(path, f"table '{tname}' has no obs column '{section_key}' to split sections by "
                               f"(columns: {', '.join(map(str, tab.obs.columns))})")
    if z_key is not None and z_key not in tab.obs:
        raise InputError(path, f"table '{tname}' has no obs column '{z_key}' for the section z "
                               f"(columns: {', '.join(map(str, tab.obs.columns))})")

    # positions of every row, region by region
    regions = tab.obs[region_key].astype(str).to_numpy()
    ids = tab.obs[instance_key].to_numpy()
    xy = np.full((tab.n_obs, 2), np.nan)
    for reg in sorted(np.unique(regions)):
        rows = np.flatnonzero(regions == reg)
        kind, elem = _element(sdata, reg, path)
        index, exy = _centroids(sd, elem, reg, kind, coordinate_system, path)
        xy[rows] = exy[_match(index, ids[rows], reg, path)]

    if section_key is not None:
        labels = tab.obs[section_key].astype(str).to_numpy()
        key = section_key
    else:
        labels, key = regions, region_key
    X_all = tab.layers[layer] if layer is not None else tab.X
    if X_all is None:
        raise InputError(path, f"table '{tname}' has no X (expression); name a layer with --layer "
                               f"(layers: {', '.join(tab.layers.keys()) or 'none'})")
    out = []
    for label in sorted(np.unique(labels)):
        rows = np.flatnonzero(labels == label)
        src = f"{path}[{key}={label}]"
        obs = tab.obs.iloc[rows].copy()
        obs.index = obs.index.astype(str)
        sub = _anndata_of(X_all[rows], obs, tab.var.copy())
        sub.obsm["spatial"] = xy[rows] * float(unit_factor)
        validate_section(sub, src, counts_expected=counts_expected)
        z = None
        if z_key is not None:
            z = _constant(sub.obs[z_key], f"obs['{z_key}']", src) * float(unit_factor)
        elif "z" in sub.obs:
            try:
                zs = np.unique(np.asarray(sub.obs["z"], dtype=float))
                z = float(zs[0]) * float(unit_factor) if len(zs) == 1 else None
            except (TypeError, ValueError):
                z = None
        out.append(SectionInput(name=str(label), adata=sub, source=src, z=z))
    return out


def _anndata_of(X, obs, var):
    import anndata as ad

    if hasattr(X, "compute"):  # dask-backed tables
        X = X.compute()
    return ad.AnnData(X=X, obs=obs, var=var)
