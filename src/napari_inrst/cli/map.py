"""``napari-inrst map``: map points of one section into the model's stack frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError

HELP = "map points of one section (its own input frame) into the model's stack frame (x, y, z in µm)"


def add_parser(sub):
    p = sub.add_parser(
        "map", help=HELP,
        description=HELP + ". Applies everything the model knows about where the section lies: the rigid "
                           "alignment and its field-driven refinement (stored in the model), the stack's "
                           "unit factor, the section's z. OUT.csv has columns x,y,z, one row per input row, "
                           "in order.")
    p.add_argument("model", metavar="MODEL", help="model file written by 'napari-inrst fit'")
    p.add_argument("--section", required=True, metavar="K",
                   help="the section: its 0-based input index or its name (see 'napari-inrst transforms MODEL')")
    p.add_argument("--coords", required=True, metavar="IN.csv",
                   help="CSV with columns x, y: coordinates in the section's own input frame (as in its file)")
    p.add_argument("--out", required=True, metavar="OUT.csv", help="CSV to write: columns x, y, z (stack frame, µm)")
    return p


def read_xy(path) -> np.ndarray:
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        raise InputError(path, "is a folder, not a CSV file")
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise InputError(path, "is empty; needs a header line with columns x, y") from None
    except Exception as exc:  # noqa: BLE001 - parser errors, bad encodings
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        raise InputError(path, f"not a readable CSV ({reason})") from None
    from ..io.tables import find_columns

    sub = df[find_columns(path, df.columns, "xy")]
    vals = sub.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(vals).all(axis=1)
    if bad.any():
        r = int(np.argmax(bad))
        raw = ", ".join(str(v) for v in sub.iloc[r].tolist())
        raise InputError(path, f"row {r + 2}: x, y must be finite numbers, got '{raw}'")
    return vals


def run(args) -> int:
    from ..align.mapping import map_points, section_index
    from ..field.model import load_model
    from ..io.atomic import atomic_path

    model = load_model(args.model)
    section_index(model.stack_meta, args.section, args.model)  # an unknown section before reading the CSV
    xy = read_xy(args.coords)
    xyz = map_points(model.stack_meta, args.section, xy, args.model)
    lines = ["x,y,z"] + [f"{x:.12g},{y:.12g},{z:.12g}" for x, y, z in xyz.tolist()]
    with atomic_path(args.out) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
    return 0
