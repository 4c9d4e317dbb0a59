"""``napari-inrst impute``: a measured section with the field's values at every spot.

    napari-inrst impute MODEL S.h5ad --out S_imputed.h5ad [--section NAME] [--z Z] [--unit-factor F]

Writes a copy of ``S.h5ad`` with ``layers['inrst']`` (the field at each spot, for every gene of
the file the model knows; NaN for the others), ``obs['inrst_occupancy']``, ``var['inrst_modeled']``
and ``uns['napari_inrst']``; everything else untouched. The spots are placed in the model's frame
with the transform and z of the model's section of the same name (or ``--section``); a section
the model was not trained on needs ``--z`` (or a z recorded in the file) and coordinates already
in the stack frame.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HELP = "add the field's values at every spot of a measured section (layers['inrst']) to a copy of it"


def add_parser(sub):
    p = sub.add_parser("impute", help=HELP, description=HELP + "; occupancy in obs['inrst_occupancy'].")
    p.add_argument("model", metavar="MODEL", help="model file written by 'napari-inrst fit'")
    p.add_argument("section", metavar="S.h5ad", help="the measured section (2D obsm['spatial'])")
    p.add_argument("--out", required=True, metavar="S_imputed.h5ad", help="AnnData file to write")
    p.add_argument("--section", dest="section_name", default=None, metavar="NAME",
                   help="the model's section this file is (default: the one named like the file)")
    p.add_argument("--z", type=float, default=None, metavar="Z",
                   help="z of the section (µm, stack frame; default: the model's section's z, or the file's)")
    p.add_argument("--unit-factor", type=float, default=None,
                   help="multiply coordinates (and a recorded z) by this to get µm (default: as in the model)")
    p.add_argument("--quiet", action="store_true", help="no summary line")
    return p


def placement(model, path, adata, *, name=None, z=None, unit_factor=None):
    """(xyz in the model's frame, the model section's name or None) for the spots of ``adata``."""
    from ..errors import InputError
    from ..io.readers import section_z
    from ..stack import apply_transform

    meta = model.stack_meta or {}
    names = [str(n) for n in meta.get("names", [])]
    k = None
    if name is not None:
        if name not in names:
            raise InputError(path, f"--section '{name}' is not a section of the model "
                                   f"(sections: {', '.join(names) or 'none'})")
        k = names.index(name)
    else:
        stem = Path(path).stem
        srcs = [Path(str(s).split("[")[0]).stem for s in meta.get("sources", [])]
        if stem in names:
            k = names.index(stem)
        elif srcs.count(stem) == 1:
            k = srcs.index(stem)
    uf = float(unit_factor) if unit_factor is not None else float(meta.get("unit_factor", 1.0) if k is not None else 1.0)
    xy = np.asarray(adata.obsm["spatial"], dtype=np.float64)[:, :2] * uf
    if k is not None:
        xy = apply_transform(np.asarray(meta["transforms"][k], dtype=np.float64), xy)
    if z is None and k is not None:
        z = float(meta["z"][k])
    if z is None:
        rec = section_z(adata)
        if rec is None:
            raise InputError(path, f"is not a section of the model (sections: {', '.join(names) or 'none'}) "
                                   "and records no z (uns['z_um'], uns['z'] or a constant obs['z']); name its "
                                   "section with --section NAME, or give its z in µm with --z Z")
        z = rec * uf
    return np.column_stack([xy, np.full(len(xy), float(z))]), (names[k] if k is not None else None)


def run(args) -> int:
    from ..field.model import load_model
    from ..io.anndata_out import impute_anndata, write_h5ad
    from ..io.readers import read_h5ad
    from ..errors import InputError

    model = load_model(args.model)
    adata = read_h5ad(args.section)
    xyz, matched = placement(model, args.section, adata, name=args.section_name, z=args.z,
                             unit_factor=args.unit_factor)
    try:
        out = impute_anndata(model, adata, xyz, model_section=matched or "", z_um=float(xyz[0, 2]) if len(xyz) else 0.0)
    except InputError as exc:
        raise InputError(args.section, exc.problem) from None
    write_h5ad(out, args.out)
    if not args.quiet:
        where = f"as the model's section '{matched}'" if matched else "in the stack frame as given (no model section matched)"
        print(f"wrote {args.out}: {out.n_obs} spots, {int(out.var['inrst_modeled'].sum())} of {out.n_vars} genes "
              f"imputed in layers['inrst'], z = {xyz[0, 2]:g} µm, placed {where}", file=sys.stderr)
    return 0
