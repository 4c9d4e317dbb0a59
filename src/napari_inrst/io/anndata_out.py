"""Results as AnnData (and SpatialData), where scanpy/squidpy users continue (no Qt; torch only
through the field).

* :func:`predictions_anndata` – a field's predictions at query points (``predict --out P.h5ad``);
* :func:`virtual_section` – a **virtual section** at any z: pseudo-spots on a regular grid inside
  the tissue occupancy mask with predicted expression (``slice``; View widget);
* :func:`impute_anndata` – a measured section with the field's values at every spot in
  ``layers['inrst']`` and occupancy in ``obs['inrst_occupancy']`` (``impute``);
* :func:`qc_anndata` – sections with their consistency scores and damaged flags in ``obs`` and
  the per-section table in ``uns`` (``qc --out``; QC widget "Save to AnnData…");
* :func:`write_h5ad` / :func:`write_spatialdata` – atomic writes, one-line errors.

Every result carries ``uns['napari_inrst']``: what made it (kind, model provenance, settings),
in types an ``.h5ad`` can hold.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from ..errors import InputError

#: pseudo-spots above which ``virtual_section`` refuses (ask for a coarser --spacing)
MAX_GRID_POINTS = 4_000_000
OCCUPANCY_THRESHOLD = 0.5


# --- metadata --------------------------------------------------------------------------------
def h5ad_safe(obj):
    """``obj`` in types ``.h5ad`` stores: dicts of scalars, strings and flat arrays; anything
    nested deeper (lists of dicts, ragged lists) becomes a JSON string; ``None`` is dropped."""
    if isinstance(obj, dict):
        return {str(k): h5ad_safe(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj)
    if isinstance(obj, str):
        return obj
    if isinstance(obj, np.ndarray) and obj.dtype.kind in "biuf":
        return obj
    if isinstance(obj, (list, tuple, np.ndarray)):
        vals = list(obj)
        if vals and all(isinstance(v, str) for v in vals):
            return np.asarray(vals, dtype=object)
        if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in vals):
            return np.asarray(vals, dtype=np.float64)
        try:
            return json.dumps(vals, default=str)
        except (TypeError, ValueError):
            return str(vals)
    return str(obj)


def model_uns(field, kind: str, **settings) -> dict:
    """``uns['napari_inrst']``: the kind of result, its settings and the model's provenance."""
    from .. import __version__

    meta = getattr(field, "stack_meta", {}) or {}
    out = {"kind": kind, "napari_inrst": __version__, **settings,
           "normalize": getattr(field, "normalize", None),
           "provenance": getattr(field, "provenance", {}) or {},
           "sections": {k: meta[k] for k in ("names", "z", "sources", "spot_spacing_um", "z_spacing_um",
                                            "unit_factor") if k in meta}}
    return h5ad_safe(out)


# --- writers ---------------------------------------------------------------------------------
def write_h5ad(adata, path):
    """Write ``adata`` to ``path`` atomically (nothing half-written is left behind)."""
    from .atomic import atomic_path

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            adata.write_h5ad(tmp)
    except OSError as exc:
        raise InputError(path, f"cannot write ({exc.strerror or exc})") from None
    return path


@contextlib.contextmanager
def atomic_dir(path):
    """Yield a fresh path for a folder written beside ``path``; on success it replaces ``path``
    (an existing folder is moved aside first and removed after), on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    new = work / path.name
    try:
        yield new
        old = None
        if path.exists():
            old = work / (path.name + ".old")
            os.replace(path, old)
        os.replace(new, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_spatialdata(adata, path, *, region: str = "virtual_section", radius: float | None = None):
    """Write a section as a SpatialData store: one shapes element ``region`` (circles at
    ``obsm['spatial']``, ``radius`` µm, default half the grid spacing) in coordinate system
    ``global`` (µm) and table ``table`` annotating it (``region_key='region'``,
    ``instance_key='instance_id'``). Atomic."""
    from .spatialdata import import_spatialdata

    import_spatialdata(path)
    import geopandas as gpd
    import pandas as pd
    from shapely import points
    from spatialdata import SpatialData
    from spatialdata.models import ShapesModel, TableModel

    path = Path(path)
    xy = np.asarray(adata.obsm["spatial"], dtype=np.float64)
    if radius is None:
        sp = adata.uns.get("napari_inrst", {}).get("spacing_um") if isinstance(adata.uns.get("napari_inrst"), dict) else None
        radius = 0.5 * float(sp) if sp else 1.0
    ids = pd.Index([str(v) for v in adata.obs_names])
    gdf = gpd.GeoDataFrame({"radius": np.full(len(xy), float(radius))}, geometry=points(xy), index=ids)
    shapes = ShapesModel.parse(gdf)
    tab = adata.copy()
    tab.obs["region"] = pd.Categorical([region] * tab.n_obs)
    tab.obs["instance_id"] = ids.to_numpy()
    tab = TableModel.parse(tab, region=region, region_key="region", instance_key="instance_id")
    sdata = SpatialData(shapes={region: shapes}, tables={"table": tab})
    try:
        with atomic_dir(path) as tmp, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*autosharding.*")  # zarr 3's notice, not ours
            sdata.write(tmp)
    except OSError as exc:
        raise InputError(path, f"cannot write ({exc.strerror or exc})") from None
    return path


# --- results ---------------------------------------------------------------------------------
def predictions_anndata(field, xyz, pred, *, genes=None, occupancy=None, **settings):
    """AnnData of predictions: ``X`` (n × genes), ``obsm['spatial']`` the query x, y,
    ``obs['z']``, ``var_names`` the genes, ``uns['napari_inrst']`` provenance."""
    import anndata as ad
    import pandas as pd

    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    genes = list(field.genes) if genes is None else list(genes)
    obs = pd.DataFrame({"z": xyz[:, 2]}, index=pd.Index([str(i) for i in range(len(xyz))]))
    if occupancy is not None:
        obs["occupancy"] = np.asarray(occupancy, dtype=np.float32)
    out = ad.AnnData(X=np.asarray(pred, dtype=np.float32), obs=obs,
                     var=pd.DataFrame(index=pd.Index([str(g) for g in genes])))
    out.obsm["spatial"] = np.ascontiguousarray(xyz[:, :2])
    out.uns["napari_inrst"] = model_uns(field, "predictions", **settings)
    return out


def _default_spacing(field) -> float:
    sp = (getattr(field, "stack_meta", {}) or {}).get("spot_spacing_um")
    if sp:
        return float(sp)
    lo, hi = field.bounds()
    return float(max(hi[0] - lo[0], hi[1] - lo[1])) / 200.0 or 1.0


def virtual_section(field, z: float, spacing: float | None = None, *, threshold: float = OCCUPANCY_THRESHOLD,
                    genes=None, chunk: int = 262_144, bounds=None):
    """A virtual section at ``z`` (µm, stack frame): pseudo-spots on a regular grid over the
    field's x/y bounds (``spacing`` µm; default the data's spot spacing) where the occupancy is
    ≥ ``threshold``, with the field's expression there.

    Returns an AnnData: ``X`` predictions (float32), ``obsm['spatial']`` x, y (µm),
    ``obs['z']``, ``obs['occupancy']``, ``obs['array_row']``/``obs['array_col']`` (grid indices),
    ``uns['napari_inrst']`` (kind ``virtual_section``, z, spacing, threshold, provenance).
    Raises :class:`InputError` when the grid would be too large or holds no tissue.
    """
    import anndata as ad
    import pandas as pd

    z = float(z)
    if not np.isfinite(z):
        raise InputError(None, f"z must be a finite number; got {z}")
    spacing = _default_spacing(field) if spacing is None else float(spacing)
    if not spacing > 0 or not np.isfinite(spacing):
        raise InputError(None, f"--spacing must be > 0 µm; got {spacing:g}")
    lo, hi = bounds if bounds is not None else field.bounds()
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    nx = int(np.floor((hi[0] - lo[0]) / spacing + 1e-9)) + 1
    ny = int(np.floor((hi[1] - lo[1]) / spacing + 1e-9)) + 1
    if nx * ny > MAX_GRID_POINTS:
        raise InputError(None, f"a {spacing:g} µm grid over {hi[0] - lo[0]:.0f} × {hi[1] - lo[1]:.0f} µm has "
                               f"{nx * ny:,} points (limit {MAX_GRID_POINTS:,}); give a larger --spacing")
    gene_idx = field.gene_indices(genes) if hasattr(field, "gene_indices") else list(range(len(field.genes)))
    names = [str(field.genes[i]) for i in gene_idx]
    xs = lo[0] + spacing * np.arange(nx)
    ys = lo[1] + spacing * np.arange(ny)
    keep_xyz, keep_rc, keep_occ, preds = [], [], [], []
    rows_per = max(1, chunk // nx)
    for r0 in range(0, ny, rows_per):
        yy, xx = np.meshgrid(ys[r0:r0 + rows_per], xs, indexing="ij")
        pts = np.column_stack([xx.ravel(), yy.ravel(), np.full(xx.size, z)])
        occ = np.asarray(field.occupancy(pts), dtype=np.float32)
        inside = occ >= threshold
        if not inside.any():
            continue
        p = pts[inside]
        preds.append(np.asarray(field.decode(field.latent(p), gene_idx), dtype=np.float32))
        keep_xyz.append(p)
        keep_occ.append(occ[inside])
        rr, cc = np.meshgrid(np.arange(r0, min(r0 + rows_per, ny)), np.arange(nx), indexing="ij")
        keep_rc.append(np.column_stack([rr.ravel(), cc.ravel()])[inside])
    if not preds:
        zlo, zhi = lo[2], hi[2]
        raise InputError(None, f"no tissue at z = {z:g} µm (occupancy < {threshold:g} at every grid point); "
                               f"the field's sections span z {zlo:g}–{zhi:g} µm")
    xyz = np.concatenate(keep_xyz)
    rc = np.concatenate(keep_rc)
    obs = pd.DataFrame({"z": xyz[:, 2], "occupancy": np.concatenate(keep_occ),
                        "array_row": rc[:, 0].astype(np.int64), "array_col": rc[:, 1].astype(np.int64)},
                       index=pd.Index([f"v{i}" for i in range(len(xyz))]))
    out = ad.AnnData(X=np.concatenate(preds), obs=obs, var=pd.DataFrame(index=pd.Index(names)))
    out.obsm["spatial"] = np.ascontiguousarray(xyz[:, :2])
    out.uns["napari_inrst"] = model_uns(field, "virtual_section", z_um=z, spacing_um=spacing,
                                        occupancy_threshold=float(threshold))
    return out


def impute_anndata(field, adata, xyz, **settings):
    """A copy of ``adata`` with the field's values at its spots: ``layers['inrst']`` (n_obs ×
    n_vars, NaN for genes the field does not model), ``obs['inrst_occupancy']``,
    ``var['inrst_modeled']`` and ``uns['napari_inrst']``; everything else as it was.

    ``xyz``: the spots' positions in the field's frame (µm), in ``adata``'s row order.
    """
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    if len(xyz) != adata.n_obs:
        raise ValueError(f"{len(xyz)} positions for {adata.n_obs} spots")
    pos = {str(g): i for i, g in enumerate(field.genes)}
    cols = [pos.get(str(g), -1) for g in adata.var_names]
    have = np.array([c >= 0 for c in cols], dtype=bool)
    if not have.any():
        raise InputError(None, f"none of the section's {adata.n_vars} genes is modeled by the field "
                               f"({len(field.genes)} genes, e.g. {', '.join(map(str, field.genes[:3]))})")
    out = adata.copy()
    layer = np.full((adata.n_obs, adata.n_vars), np.nan, dtype=np.float32)
    idx = [c for c in cols if c >= 0]
    layer[:, have] = np.asarray(field.decode(field.latent(xyz), idx), dtype=np.float32)
    out.layers["inrst"] = layer
    out.obs["inrst_occupancy"] = np.asarray(field.occupancy(xyz), dtype=np.float32)
    out.var["inrst_modeled"] = have
    out.uns["napari_inrst"] = model_uns(field, "impute", n_genes_modeled=int(have.sum()), **settings)
    return out


QC_COLUMNS = ("score", "z_score", "rmse", "rmse_rel", "z_rmse", "flagged", "reason")


def qc_anndata(stack, rows, *, settings: dict | None = None):
    """The stack's sections in one AnnData with their QC results: ``obs['section']``, ``obs['z']``
    and, per cell, its section's ``qc_score``, ``qc_z_score``, ``qc_rmse``, ``qc_z_rmse``,
    ``qc_flagged`` (damaged/outlier), ``qc_reason``; ``uns['napari_inrst_qc']`` holds the
    per-section table (one array per column, sections in stack order) and ``settings`` (the caller
    records the flag threshold ``flag_z`` there). ``obsm['spatial']`` is in
    the stack frame (aligned), ``obsm['spatial_input']`` as read."""
    import anndata as ad
    import pandas as pd

    by_index = {int(r["index"]): r for r in rows}
    parts = []
    for i, s in enumerate(stack.sections):
        a = s.adata.copy()
        a.obs_names = [f"{s.name}:{n}" for n in a.obs_names]
        a.obs["section"] = pd.Categorical([s.name] * a.n_obs, categories=list(stack.names))
        a.obs["z"] = float(s.z)
        r = by_index.get(i, {})
        for c in QC_COLUMNS:
            v = r.get(c, np.nan if c not in ("flagged", "reason") else (False if c == "flagged" else ""))
            a.obs[f"qc_{c}"] = bool(v) if c == "flagged" else (str(v) if c == "reason" else float(v))
        a.obsm["spatial_input"] = np.asarray(s.xy_input, dtype=np.float64)
        a.obsm["spatial"] = np.asarray(s.xy, dtype=np.float64)
        parts.append(a)
    out = ad.concat(parts, merge="same")
    out.obs["section"] = pd.Categorical(out.obs["section"].astype(str), categories=list(stack.names))
    table = {"section": [s.name for s in stack.sections], "z_um": [float(s.z) for s in stack.sections]}
    for c in QC_COLUMNS:
        vals = [by_index.get(i, {}).get(c) for i in range(len(stack))]
        if c == "flagged":
            table[c] = np.array([bool(v) for v in vals])
        elif c == "reason":
            table[c] = [str(v or "") for v in vals]
        else:
            table[c] = np.array([np.nan if v is None else float(v) for v in vals])
    out.uns["napari_inrst_qc"] = h5ad_safe({"sections": table, **(settings or {})})
    return out


def write_predictions_h5ad(field, xyz, path, *, masked: bool = False):
    """``predict --out P.h5ad``: predict every gene at ``xyz`` and write the AnnData atomically
    (``masked``: points with occupancy < 0.5 get NaN; occupancy in ``obs['occupancy']``)."""
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    occ = np.asarray(field.occupancy(xyz), dtype=np.float32) if hasattr(field, "occupancy") else None
    pred = np.asarray(field.predict(xyz), dtype=np.float32)
    if masked and occ is not None:
        pred[occ < OCCUPANCY_THRESHOLD] = np.nan
    return write_h5ad(predictions_anndata(field, xyz, pred, occupancy=occ, masked=bool(masked)), path)


def save_virtual_section(field, z: float, path, spacing: float | None = None, **kwargs):
    """:func:`virtual_section` written to ``path``: a SpatialData store when it ends in ``.zarr``,
    an ``.h5ad`` otherwise (the View widget's "Save virtual section…"). Returns the AnnData."""
    vs = virtual_section(field, z, spacing, **kwargs)
    if str(path).lower().rstrip("/").endswith(".zarr"):
        write_spatialdata(vs, path)
    else:
        write_h5ad(vs, path)
    return vs


def save_qc(stack, rows, path, **settings):
    """:func:`qc_anndata` written to ``path`` (the QC widget's "Save to AnnData…")."""
    if not rows:
        raise InputError(None, "no QC results yet: run 'Check every section' first")
    return write_h5ad(qc_anndata(stack, rows, settings=settings or None), path)
