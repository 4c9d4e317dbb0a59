"""``napari-inrst render``: a gene of a trained field as a plane image or a volume, headless."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import InputError

HELP = "render gene(s) of a trained field as a plane (PNG/TIFF) or a volume (TIFF/OME-Zarr)"

EPILOG = """examples:
  napari-inrst render model.inrst --gene Slc17a6 --z 1525 --shape 1024 --out plane.png
  napari-inrst render model.inrst --gene Slc17a6 --gene Gad1 --z 1525 --out plane.tif
  napari-inrst render model.inrst --gene Slc17a6 --volume --shape 256 --out field.ome.zarr

--shape: one number = pixels/voxels on the longest axis (square pixels, cubic voxels);
two (NY NX) for a plane, three (NZ NY NX) for a volume. Outside tissue: transparent (PNG) or NaN."""


def add_parser(sub):
    import argparse

    p = sub.add_parser("render", help=HELP, description=HELP, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="a model file written by 'napari-inrst fit' or the Train widget")
    p.add_argument("--gene", action="append", required=True, metavar="G",
                   help="gene to render (repeat for several; PNG takes one)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--z", type=float, metavar="Z", help="plane at this z in µm (any value, not a section index)")
    where.add_argument("--volume", action="store_true", help="a 3D volume over the field's bounds")
    p.add_argument("--shape", type=int, nargs="+", default=None, metavar="N",
                   help="N (longest axis) | NY NX (plane) | NZ NY NX (volume); default 512 (plane), 128 (volume)")
    p.add_argument("--extent", type=float, nargs=4, metavar=("XMIN", "XMAX", "YMIN", "YMAX"),
                   help="plane extent in µm (default: the field's bounds)")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="plane: .png (colour) or .tif (values); volume: .tif or .zarr/.ome.zarr")
    p.add_argument("--colormap", default="magma", help="PNG colormap (napari names; default magma)")
    p.add_argument("--contrast", type=float, nargs=2, metavar=("LO", "HI"),
                   help="PNG contrast limits (default: 1st–99.5th percentile of the field in tissue)")
    p.add_argument("--no-mask", action="store_true", help="do not mask points outside tissue")
    p.add_argument("--oversample", type=float, default=None, metavar="K",
                   help="band-limited sampling: evaluate K samples per finest field scale and resample "
                        "cubically (faster for fine grids; default: every pixel/voxel exactly)")
    p.add_argument("--slab-mb", type=float, default=256.0,
                   help="volume: memory per slab of z planes in MB (default 256)")
    return p


def _shape(args, volume: bool):
    shape = list(args.shape) if args.shape else [128 if volume else 512]
    if any(n < 1 for n in shape):
        raise InputError(None, f"--shape must be positive, got {' '.join(map(str, shape))}")
    if volume:
        if len(shape) == 1:
            return None, shape[0]
        if len(shape) == 3:
            return tuple(shape), None
        raise InputError(None, f"--volume takes --shape N or NZ NY NX, got {len(shape)} numbers")
    if len(shape) == 1:
        return shape[0], None
    if len(shape) == 2:
        return tuple(shape), None
    raise InputError(None, f"a plane takes --shape N or NY NX, got {len(shape)} numbers")


def run(args) -> int:
    out = Path(args.out)
    volume = bool(args.volume)
    suffix = out.name.lower()
    if volume:
        from ..render.export import volume_format

        fmt = volume_format(out)
    else:
        if suffix.endswith((".png", ".jpg", ".jpeg")):
            fmt = "png"
        elif suffix.endswith((".tif", ".tiff")):
            fmt = "tiff"
        else:
            raise InputError(out, "plane output must end in .png or .tif/.tiff")
        if fmt == "png" and len(args.gene) > 1:
            raise InputError(out, "a PNG shows one gene; use .tif for several")
    shape, resolution = _shape(args, volume)
    if args.slab_mb <= 0:
        raise InputError(None, f"--slab-mb must be > 0, got {args.slab_mb}")
    if args.oversample is not None and not args.oversample >= 1:
        raise InputError(None, f"--oversample must be ≥ 1, got {args.oversample}")
    if args.extent is not None and volume:
        raise InputError(None, "--extent applies to planes only")

    from ..field import load_model

    field = load_model(args.model)  # InputError for missing/corrupt/foreign files
    from ..render.plane import auto_contrast, evaluate_plane, gene_indices, plane_grid_for

    idx = gene_indices(field, args.gene)
    masked = not args.no_mask
    if not volume:
        grid = plane_grid_for(field, args.z, args.extent, shape)
        vals = evaluate_plane(field, grid, idx, masked=masked, oversample=args.oversample)
        if fmt == "png":
            from ..render.export import colorize, write_image

            lims = tuple(args.contrast) if args.contrast else auto_contrast(field, idx)[0]
            write_image(out, colorize(vals[0], lims, args.colormap))
        else:
            _write_plane_tiff(out, vals, grid, args.gene)
        print(f"wrote {out}: {', '.join(args.gene)} at z = {args.z:g} µm, {grid.nx}×{grid.ny} px of "
              f"{grid.dx:.3g} µm", file=sys.stderr)
        return 0

    from ..render.export import VolumeWriter
    from ..render.grids import volume_grid
    from ..render.volume import iter_slabs

    grid = volume_grid(field.bounds(), resolution, shape=shape, budget_bytes=float("inf"))
    if args.oversample:
        # band-limited: the coarse samples are small; resample the whole volume in memory
        from ..render.export import save_volume
        from ..render.volume import evaluate_volume

        vals = evaluate_volume(field, grid, idx, masked=masked, oversample=args.oversample)
        save_volume(out, vals, scale_zyx=grid.scale, translate_zyx=grid.translate, genes=args.gene)
        print(f"wrote {out}: {', '.join(args.gene)}, {grid.nx}×{grid.ny}×{grid.nz} voxels (band-limited)",
              file=sys.stderr)
        return 0
    slab_points = max(1, int(args.slab_mb * 2**20 / (4 * (len(idx) + getattr(field, "rank", 64) + 2))))
    writer = VolumeWriter(out, (len(idx), *grid.shape), scale_zyx=grid.scale, translate_zyx=grid.translate,
                          genes=args.gene)
    try:
        for k0, k1, vals, _ in iter_slabs(field, grid, idx, masked=masked, slab_points=slab_points):
            writer.write(k0, vals)
            print(f"\rplanes {k1}/{grid.nz}", end="", file=sys.stderr, flush=True)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    print(f"\nwrote {out}: {', '.join(args.gene)}, {grid.nx}×{grid.ny}×{grid.nz} voxels of "
          f"{grid.dx:.3g}×{grid.dy:.3g}×{grid.dz:.3g} µm", file=sys.stderr)
    return 0


def _write_plane_tiff(path, vals, grid, genes):
    import tifffile

    from ..io.atomic import atomic_path

    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, vals.astype("float32"), imagej=True, resolution=(1.0 / grid.dx, 1.0 / grid.dy),
                         metadata={"axes": "CYX", "unit": "um", "Labels": [str(g) for g in genes],
                                   "z_um": float(grid.z), "origin_yx_um": [float(grid.y0), float(grid.x0)]})
