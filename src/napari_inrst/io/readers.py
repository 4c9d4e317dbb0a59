"""Readers for the formats users bring, as plain functions (the CLI and napari both use them).

Every reader returns validated AnnData objects whose ``obsm['spatial']`` is in µm, and raises
:class:`~napari_inrst.errors.InputError` naming the file and the problem.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .validate import validate_section

#: Spot diameter of 10x Visium (µm), used to convert full-resolution pixels to µm.
VISIUM_SPOT_DIAMETER_UM = 55.0


@dataclass
class SectionInput:
    """One section as read from disk, before it joins a stack."""

    name: str
    adata: object  # anndata.AnnData
    source: str
    z: float | None = None  # µm, when the file records it


def _anndata():
    import anndata

    return anndata


def check_exists(path: Path, kind: str = "file"):
    if not path.exists():
        raise InputError(path, f"no such {kind}")


#: the error for a section without a z of its own when none was given
NO_Z_MESSAGE = ("records no z (uns['z_um'], uns['z'] or a constant obs['z']); "
                "give the z position of each section in µm with --z Z1 [Z2 ...]")


def section_z(adata) -> float | None:
    """The z position (µm) a file records for itself: ``uns['z_um']``/``uns['z']`` or a constant ``obs['z']``."""
    for key in ("z_um", "z"):
        if key in adata.uns:
            try:
                return float(np.asarray(adata.uns[key]).ravel()[0])
            except (TypeError, ValueError, IndexError):
                return None
    if "z" in adata.obs:
        vals = np.unique(np.asarray(adata.obs["z"], dtype=float))
        if len(vals) == 1:
            return float(vals[0])
    return None


def read_h5ad(path, *, counts_expected: bool = False, unit_factor: float = 1.0):
    """Read one ``.h5ad`` section (2D ``obsm['spatial']``); coordinates × ``unit_factor`` → µm."""
    path = Path(path)
    check_exists(path)
    try:
        adata = _anndata().read_h5ad(path)
    except Exception as exc:  # h5py/anndata raise many types for corrupt files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(path, f"not a readable AnnData .h5ad file ({reason[:160]})") from None
    validate_section(adata, path, counts_expected=counts_expected)
    if unit_factor != 1.0:
        adata.obsm["spatial"] = adata.obsm["spatial"] * float(unit_factor)
    return adata


def read_h5ad_sections(path, section_key: str, *, z_key: str | None = None, counts_expected=False,
                       unit_factor: float = 1.0) -> list[SectionInput]:
    """Read one ``.h5ad`` that holds several sections, split by ``obs[section_key]``.

    Sections are ordered by ``obs[z_key]`` when given (which must be constant within a
    section), else by the sorted section labels.
    """
    path = Path(path)
    check_exists(path)
    try:
        adata = _anndata().read_h5ad(path)
    except Exception as exc:
        raise InputError(path, f"not a readable AnnData .h5ad file ({str(exc)[:160]})") from None
    if section_key not in adata.obs:
        raise InputError(path, f"no obs column '{section_key}' to split sections by "
                               f"(columns: {', '.join(map(str, adata.obs.columns)) or 'none'})")
    labels = adata.obs[section_key].astype(str).to_numpy()
    out = []
    for label in sorted(np.unique(labels)):
        sub = adata[labels == label].copy()
        src = f"{path}[{section_key}={label}]"
        validate_section(sub, src, counts_expected=counts_expected)
        if unit_factor != 1.0:
            sub.obsm["spatial"] = sub.obsm["spatial"] * float(unit_factor)
        z = None
        if z_key is not None:
            if z_key not in sub.obs:
                raise InputError(path, f"no obs column '{z_key}' for the section z")
            zs = np.unique(np.asarray(sub.obs[z_key], dtype=float))
            if len(zs) != 1:
                raise InputError(src, f"obs['{z_key}'] is not constant within the section")
            z = float(zs[0]) * float(unit_factor)
        out.append(SectionInput(name=str(label), adata=sub, source=src, z=z))
    if z_key is not None:
        out.sort(key=lambda s: s.z)
    return out


def _read_10x_h5(path: Path):
    """A Space Ranger ``filtered_feature_bc_matrix.h5`` → AnnData (spots × genes, raw counts)."""
    import h5py
    import pandas as pd
    from scipy import sparse

    try:
        with h5py.File(path, "r") as f:
            g = f["matrix"]
            shape = tuple(int(v) for v in g["shape"][()])
            mat = sparse.csc_matrix((g["data"][()], g["indices"][()], g["indptr"][()]), shape=shape)
            barcodes = [b.decode() for b in g["barcodes"][()]]
            feat = g["features"]
            names = [b.decode() for b in feat["name"][()]]
            ids = [b.decode() for b in feat["id"][()]]
            ftype = [b.decode() for b in feat["feature_type"][()]] if "feature_type" in feat else None
    except (OSError, KeyError) as exc:
        raise InputError(path, f"not a 10x feature-barcode matrix .h5 ({exc})") from None
    X = mat.T.tocsr().astype(np.float32)
    var = pd.DataFrame({"gene_ids": ids}, index=names)
    if ftype is not None:
        var["feature_types"] = ftype
        keep = np.asarray(ftype) == "Gene Expression"
        X, var = X[:, keep], var[keep]
    adata = _anndata().AnnData(X=X, obs=pd.DataFrame(index=barcodes), var=var)
    adata.var_names_make_unique()
    return adata


def read_visium(outs, *, counts_expected: bool = True) -> object:
    """Read a 10x Visium Space Ranger ``outs/`` folder; coordinates in µm from the scale factors.

    Uses ``filtered_feature_bc_matrix.h5``, ``spatial/tissue_positions.csv`` (or the older
    headerless ``tissue_positions_list.csv``) and ``spatial/scalefactors_json.json``; keeps
    in-tissue spots. µm per full-resolution pixel = 55 µm / ``spot_diameter_fullres``.
    """
    import pandas as pd

    outs = Path(outs)
    check_exists(outs, "folder")
    h5 = outs / "filtered_feature_bc_matrix.h5"
    check_exists(h5)
    spatial = outs / "spatial"
    pos_file = next((p for p in (spatial / "tissue_positions.csv", spatial / "tissue_positions_list.csv")
                     if p.exists()), None)
    if pos_file is None:
        raise InputError(outs, "Visium folder without spot positions "
                               "(no spatial/tissue_positions.csv or spatial/tissue_positions_list.csv)")
    sf_file = spatial / "scalefactors_json.json"
    check_exists(sf_file)
    try:
        sf = json.loads(sf_file.read_text())
        px_um = VISIUM_SPOT_DIAMETER_UM / float(sf["spot_diameter_fullres"])
    except (ValueError, KeyError, TypeError, ZeroDivisionError) as exc:
        raise InputError(sf_file, f"no usable spot_diameter_fullres ({exc})") from None
    cols = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]
    try:
        with open(pos_file) as fh:
            has_header = fh.readline().startswith("barcode")
        pos = pd.read_csv(pos_file, header=0 if has_header else None)
        if not has_header:
            pos.columns = cols
        pos = pos.set_index("barcode")
        pos = pos[cols[1:]]
    except (ValueError, KeyError, pd.errors.ParserError) as exc:
        raise InputError(pos_file, f"unreadable spot positions ({exc})") from None
    adata = _read_10x_h5(h5)
    missing = adata.obs_names.difference(pos.index)
    if len(missing):
        raise InputError(pos_file, f"{len(missing)} barcodes of the matrix have no position (first: {missing[0]})")
    pos = pos.loc[adata.obs_names]
    keep = pos["in_tissue"].to_numpy() == 1
    adata = adata[keep].copy()
    pos = pos[keep]
    adata.obs = adata.obs.join(pos[["in_tissue", "array_row", "array_col"]])
    xy = pos[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(dtype=np.float64) * px_um
    adata.obsm["spatial"] = xy
    adata.uns["spot_diameter_um"] = VISIUM_SPOT_DIAMETER_UM
    validate_section(adata, outs, counts_expected=counts_expected)
    return adata


def _looks_numeric(labels) -> bool:
    """True when every label parses as a number: a data row read as a header."""
    vals = [str(v).strip() for v in labels]
    if not vals:
        return False
    try:
        [float(v) for v in vals]
    except ValueError:
        return False
    return True


def _csv_header(path: Path) -> list[str]:
    import csv

    try:
        with open(path, newline="") as fh:
            return next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(path, f"unreadable CSV ({exc})") from None


def read_csv_pair(counts_csv, coords_csv, *, counts_expected: bool = False, unit_factor: float = 1.0):
    """Read a counts CSV (first column spot id, one column per gene) and a coordinates CSV
    (first column spot id, columns ``x`` and ``y``, or the first two numeric columns).

    Both need a header row: a first line of numbers (a header-less file) is refused, and so are
    the two files given the other way round (coordinates as counts, counts as coordinates)."""
    import pandas as pd
    from anndata import AnnData

    counts_csv, coords_csv = Path(counts_csv), Path(coords_csv)
    for p in (counts_csv, coords_csv):
        check_exists(p)
    head_counts, head_coords = _csv_header(counts_csv), _csv_header(coords_csv)
    xyz_names = {"x", "y", "z"}
    coords_has_xy = {"x", "y"} <= {h.strip().lower() for h in head_coords}
    if 1 <= len(head_counts) - 1 <= 3 and {h.strip().lower() for h in head_counts[1:]} <= xyz_names \
            and not coords_has_xy:
        raise InputError(counts_csv, f"has only columns {', '.join(head_counts[1:])}: it looks like the "
                                     f"coordinates, and {coords_csv.name} like the counts; are the two files swapped?")
    if len(head_counts) > 1 and _looks_numeric(head_counts[1:]):
        raise InputError(counts_csv, "the first line holds numbers, not gene names: the counts CSV needs a "
                                     "header row (spot id, then one gene name per column)")
    if len(head_coords) > 1 and _looks_numeric(head_coords[1:]):
        raise InputError(coords_csv, "the first line holds numbers, not column names: the coordinates CSV "
                                     "needs a header row (spot id, x, y)")
    if not coords_has_xy and len(head_coords) > 4:
        raise InputError(coords_csv, f"has {len(head_coords) - 1} columns and no x, y: it looks like a counts "
                                     f"table; are {counts_csv.name} and {coords_csv.name} swapped?")
    dup = pd.Index(head_counts[1:]).duplicated()
    if dup.any():
        raise InputError(counts_csv, f"{int(dup.sum())} duplicate gene names (first: '{head_counts[1:][int(dup.argmax())]}'); "
                                     "gene names must be unique")
    try:
        counts = pd.read_csv(counts_csv, index_col=0)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(counts_csv, f"unreadable counts CSV ({exc})") from None
    try:
        coords = pd.read_csv(coords_csv, index_col=0)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(coords_csv, f"unreadable coordinates CSV ({exc})") from None
    counts.index = counts.index.astype(str)
    coords.index = coords.index.astype(str)
    coords.columns = [str(c).strip().lower() if str(c).strip().lower() in xyz_names else c for c in coords.columns]
    non_num = [c for c in counts.columns if not np.issubdtype(counts[c].dtype, np.number)]
    if non_num:
        raise InputError(counts_csv, f"non-numeric gene column(s): {', '.join(map(str, non_num[:3]))}")
    if {"x", "y"} <= set(coords.columns):
        xy = coords[["x", "y"]]
    else:
        num = coords.select_dtypes("number")
        if num.shape[1] < 2:
            raise InputError(coords_csv, "needs columns x and y (or two numeric columns)")
        xy = num.iloc[:, :2]
    try:
        xy_vals = xy.to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(coords_csv, "columns x and y must be numbers") from None
    bad = ~np.isfinite(xy_vals).all(axis=1)
    if bad.any():
        raise InputError(coords_csv, f"{int(bad.sum())} spots have a missing or non-finite coordinate "
                                     f"(first: '{xy.index[int(np.argmax(bad))]}')")
    if not counts.index.is_unique:
        raise InputError(counts_csv, f"duplicate cell/spot names (first: '{counts.index[counts.index.duplicated()][0]}')")
    missing = counts.index.difference(xy.index)
    if len(missing):
        raise InputError(coords_csv, f"{len(missing)} spots of {counts_csv.name} have no coordinates (first: '{missing[0]}')")
    xy = xy[~xy.index.duplicated()].loc[counts.index]
    adata = AnnData(X=counts.to_numpy(dtype=np.float32), obs=pd.DataFrame(index=counts.index),
                    var=pd.DataFrame(index=counts.columns.astype(str)))
    adata.obsm["spatial"] = xy.to_numpy(dtype=np.float64)
    validate_section(adata, counts_csv, counts_expected=counts_expected)
    if unit_factor != 1.0:
        adata.obsm["spatial"] = adata.obsm["spatial"] * float(unit_factor)
    return adata
