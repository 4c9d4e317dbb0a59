"""What a path holds, decided in one place, and reading whatever it holds.

:func:`path_kind` looks only at names and small metadata files (never reads expression), so the
napari reader hook, the CLI and :func:`read_path` agree on what they accept:

========================  =================================================================
``"h5ad"``                one ``.h5ad`` file (a section, or several with a section column)
``"csv_pair"``            ``NAME_counts.csv`` with ``NAME_coords.csv`` beside it
``"visium"``              a Space Ranger ``outs/`` folder (``filtered_feature_bc_matrix.h5``)
``"h5ad_folder"``         a folder of ``.h5ad`` files, one section each, in name order
``"spatialdata"``         a SpatialData ``.zarr`` store (sections = the regions its table annotates)
``"volume"``              an OME-Zarr volume written by napari-inrst (``render --volume``)
``None``                  anything else
========================  =================================================================
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError
from .ome import is_inrst_zarr
from .readers import SectionInput, check_exists, read_csv_pair, read_h5ad, read_visium, section_z
from .spatialdata import is_spatialdata_store, read_spatialdata

SECTION_KINDS = ("h5ad", "csv_pair", "visium", "h5ad_folder", "spatialdata")
COUNTS_CSV = "_counts.csv"


def path_kind(path) -> str | None:
    """The kind of data at ``path`` (see the module's table); None when it is none of them."""
    p = Path(os.fspath(path))
    if p.is_dir():
        if is_inrst_zarr(p):
            return "volume"
        if is_spatialdata_store(p):
            return "spatialdata"
        if (p / "filtered_feature_bc_matrix.h5").exists():
            return "visium"
        if any(p.glob("*.h5ad")):
            return "h5ad_folder"
        return None
    if p.suffix.lower() == ".h5ad":
        return "h5ad"
    if p.name.endswith(COUNTS_CSV):
        return "csv_pair"
    return None


def read_path(path, *, counts_expected: bool = False, unit_factor: float = 1.0) -> list[SectionInput]:
    """Read the sections a path holds (:func:`path_kind`): a ``.h5ad`` file, a CSV pair, a Visium
    ``outs/`` folder, a SpatialData ``.zarr`` store (defaults of
    :func:`~napari_inrst.io.spatialdata.read_spatialdata`), or a folder of ``.h5ad`` files."""
    path = Path(os.fspath(path))
    check_exists(path, "file or folder")
    kind = path_kind(path)
    if kind == "spatialdata":
        return read_spatialdata(path, counts_expected=counts_expected, unit_factor=unit_factor)
    if kind == "visium":
        name = path.parent.name if path.name == "outs" else path.name
        return [SectionInput(name, read_visium(path, counts_expected=counts_expected), str(path))]
    if kind == "csv_pair":
        stem = path.name[: -len(COUNTS_CSV)]
        adata = read_csv_pair(path, path.with_name(stem + "_coords.csv"), counts_expected=counts_expected,
                              unit_factor=unit_factor)
        return [SectionInput(stem, adata, str(path))]
    if kind == "h5ad_folder":
        return [s for f in sorted(path.glob("*.h5ad"))
                for s in read_path(f, counts_expected=counts_expected, unit_factor=unit_factor)]
    if path.is_dir():
        raise InputError(path, "folder holds no .h5ad files and is not a Visium outs/ folder")
    if kind != "h5ad":
        raise InputError(path, "unsupported file type (expected .h5ad, a Visium outs/ folder, or a CSV pair)")
    adata = read_h5ad(path, counts_expected=counts_expected, unit_factor=unit_factor)
    z = section_z(adata)
    return [SectionInput(path.stem, adata, str(path), z=None if z is None else z * unit_factor)]


def read_sections(paths, *, counts_expected: bool = False, unit_factor: float = 1.0) -> list[SectionInput]:
    """Read several paths in order (see :func:`read_path`)."""
    out: list[SectionInput] = []
    for p in paths:
        out.extend(read_path(p, counts_expected=counts_expected, unit_factor=unit_factor))
    return out
