"""``napari-inrst slice``: a virtual section at any z, as AnnData (or a SpatialData store).

    napari-inrst slice MODEL --z Z [--spacing UM] [--threshold P] [--genes G …]
                       (--out VIRTUAL.h5ad | --spatialdata VIRTUAL.zarr)

Pseudo-spots on a regular x/y grid (default spacing: the spot/cell spacing of the data the model
was trained on) over the field's extent, kept where the tissue occupancy is ≥ the threshold,
with the field's expression there: ``X`` (genes in the model's value space), ``obsm['spatial']``
(x, y in µm, stack frame), ``obs['z']``, ``obs['occupancy']``, ``obs['array_row'/'array_col']``
and ``uns['napari_inrst']`` (provenance). Ready for scanpy/squidpy.
"""

from __future__ import annotations

import sys

HELP = "write a virtual section at any z (pseudo-spots inside the tissue, predicted expression) as AnnData"


def add_parser(sub):
    p = sub.add_parser("slice", help=HELP, description=HELP + "; --spatialdata writes a SpatialData store "
                       "(circles + table) instead.")
    p.add_argument("model", metavar="MODEL", help="model file written by 'napari-inrst fit'")
    p.add_argument("--z", type=float, required=True, metavar="Z", help="z of the virtual section (µm, stack frame)")
    p.add_argument("--spacing", type=float, default=None, metavar="UM",
                   help="grid spacing in µm (default: the data's spot/cell spacing, recorded in the model)")
    p.add_argument("--threshold", type=float, default=0.5, metavar="P",
                   help="keep grid points whose tissue occupancy is ≥ P (default 0.5)")
    p.add_argument("--genes", nargs="+", default=None, metavar="G", help="only these genes (default: all modeled)")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", metavar="VIRTUAL.h5ad", help="AnnData file to write")
    out.add_argument("--spatialdata", metavar="VIRTUAL.zarr",
                     help="write a SpatialData store (shapes 'virtual_section' + table 'table') instead")
    p.add_argument("--extrapolate", action="store_true",
                   help="allow a z farther than one section spacing beyond the measured sections")
    p.add_argument("--quiet", action="store_true", help="no summary line")
    return p


def run(args) -> int:
    from ..errors import InputError
    from ..field.model import load_model
    from ..io.anndata_out import virtual_section, write_h5ad, write_spatialdata

    if args.spatialdata:
        from ..io.spatialdata import import_spatialdata

        import_spatialdata(args.spatialdata)  # say so before any work when the extra is missing
    if not 0.0 <= args.threshold <= 1.0:
        raise InputError(None, f"--threshold must be within 0–1; got {args.threshold:g}")
    model = load_model(args.model)
    zs = (model.stack_meta or {}).get("z") or []
    if zs:
        zlo, zhi = min(zs), max(zs)
        reach = float((model.stack_meta or {}).get("z_spacing_um") or 0.0) or max(0.1 * (zhi - zlo), 10.0)
        if not (zlo - reach <= args.z <= zhi + reach) and not args.extrapolate:
            raise InputError(args.model, f"z = {args.z:g} µm is far outside the measured sections "
                                         f"({zlo:g}–{zhi:g} µm, spacing {reach:g} µm); the field there is "
                                         "a guess: add --extrapolate to write it anyway")
    try:
        vs = virtual_section(model, args.z, args.spacing, threshold=args.threshold, genes=args.genes)
    except KeyError as exc:
        raise InputError(args.model, exc.args[0] if exc.args else str(exc)) from None
    target = args.out or args.spatialdata
    if args.out:
        write_h5ad(vs, args.out)
    else:
        write_spatialdata(vs, args.spatialdata)
    if not args.quiet:
        if zs and not min(zs) <= args.z <= max(zs):
            print(f"napari-inrst: note: z = {args.z:g} µm lies outside the measured sections "
                  f"({min(zs):g}–{max(zs):g} µm): the field is extrapolated there", file=sys.stderr)
        sp = vs.uns["napari_inrst"]["spacing_um"]
        print(f"wrote {target}: {vs.n_obs} pseudo-spots at z = {args.z:g} µm ({sp:g} µm grid), "
              f"{vs.n_vars} genes", file=sys.stderr)
    return 0
