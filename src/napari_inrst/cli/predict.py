"""``napari-inrst predict``: evaluate a model at query points from a CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError

HELP = "predict every modeled gene at query points (CSV with columns x,y,z in µm, stack frame)"


def add_parser(sub):
    p = sub.add_parser("predict", help=HELP, description=HELP + "; writes one column per gene, one row per query.")
    p.add_argument("model", metavar="MODEL", help="model file written by 'napari-inrst fit'")
    p.add_argument("--coords", required=True, metavar="Q.csv", help="CSV with columns x, y, z (µm, stack frame)")
    p.add_argument("--out", required=True, metavar="P.csv",
                   help="CSV to write (header = gene names), or P.h5ad: an AnnData (X predictions, "
                        "obsm['spatial'] the query x, y, obs['z'], obs['occupancy'], uns['napari_inrst'])")
    p.add_argument("--masked", action="store_true", help="leave points outside tissue empty (occupancy < 0.5)")
    return p


def read_coords(path) -> np.ndarray:
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    try:
        df = pd.read_csv(path)
    except Exception as exc:
        raise InputError(path, f"not a readable CSV ({str(exc).splitlines()[0][:120]})") from None
    cols = {str(c).strip().lower(): c for c in df.columns}
    missing = [c for c in "xyz" if c not in cols]
    if missing:
        raise InputError(path, f"needs columns x, y, z; missing {', '.join(missing)} "
                               f"(columns: {', '.join(map(str, df.columns)) or 'none'})")
    try:
        xyz = df[[cols["x"], cols["y"], cols["z"]]].to_numpy(dtype=np.float64)
    except (ValueError, TypeError):
        raise InputError(path, "columns x, y, z must be numbers") from None
    bad = ~np.isfinite(xyz).all(axis=1)
    if bad.any():
        raise InputError(path, f"row {int(np.argmax(bad)) + 2} has a missing or non-finite coordinate")
    return xyz


def run(args) -> int:
    import pandas as pd

    from ..field.model import load_model
    from ..io.atomic import atomic_path

    model = load_model(args.model)
    xyz = read_coords(args.coords)
    if Path(args.out).suffix.lower() == ".h5ad":  # AnnData for scanpy users (napari_inrst.io.anndata_out)
        from ..io.anndata_out import write_predictions_h5ad

        write_predictions_h5ad(model, xyz, args.out, masked=args.masked)
        return 0
    pred = model.predict(xyz, masked=args.masked)
    df = pd.DataFrame(pred, columns=model.genes)
    with atomic_path(args.out) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    return 0
