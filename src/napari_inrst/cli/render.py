"""``napari-inrst render``: a gene of a trained field as a plane image or a volume, headless.

Volumes are streamed to disk slab by slab (:func:`napari_inrst.render.volume.write_field_volume`):
memory is bounded by ``--slab-mb`` whatever ``--shape`` is, so volumes larger than memory work.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..errors import InputError

HELP = "render gene(s) of a trained field as a plane (PNG/TIFF) or a volume (OME-Zarr/TIFF)"

EPILOG = """modes:
  plane   --z Z: the field at height Z µm (any value, also between and beyond the sections)
          over the field's x/y bounds or --extent; .png (colormap, transparent outside tissue)
          or .tif/.tiff (float32 values of every --gene, NaN outside tissue, pixel size in µm).
  volume  --volume: the field on a voxel grid over its bounds, evaluated and written slab by
          slab of z planes, so the volume may be larger than memory (--slab-mb bounds it).
          .zarr/.ome.zarr: OME-Zarr (NGFF 0.4), axes c,z,y,x with voxel size and origin in µm,
          chunked, with a multiscale pyramid (each level averages 2×2×2 or 1×2×2 voxels of the
          previous one, down to ≤ 256 voxels per axis); opens lazily in napari with this plugin
          (File > Open Folder, or napari vol.zarr --plugin napari-inrst). .tif/.tiff: ImageJ
          hyperstack (ZCYX, µm), uncompressed, no pyramid.

--shape, in x, y, z order (the same x, y, z as --extent and the field's coordinates):
  N            N pixels/voxels on the longest axis, square pixels / cubic voxels
  NX NY        plane of NX × NY pixels
  NX NY NZ     volume of NX × NY × NZ voxels (1…4096 per axis)
  Files store arrays in (c,) z, y, x order, as napari and OME-Zarr expect.
  Physical scale: pixel/voxel size = the field's extent along an axis / voxels along it, in µm;
  written with the origin into TIFF and OME-Zarr files (not into PNG).

examples:
  napari-inrst render model.inrst --gene Slc17a6 --z 1525 --shape 1024 --out plane.png
  napari-inrst render model.inrst --gene Slc17a6 --gene Gad1 --z 1525 --out plane.tif
  napari-inrst render model.inrst --gene Slc17a6 --volume --shape 1024 1024 512 --oversample 4 --out vol.zarr
  napari vol.zarr --plugin napari-inrst

Outside tissue (occupancy < 0.5): transparent (PNG) or NaN. Errors (bad shape, unknown gene,
unwritable folder, not enough disk space): one line, exit status 2, nothing written."""


def add_parser(sub):
    import argparse

    p = sub.add_parser("render", help=HELP, description=HELP, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="a model file written by 'napari-inrst fit' or the Train widget")
    p.add_argument("--gene", action="append", required=True, metavar="G",
                   help="gene to render (repeat for several; PNG takes one)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--z", type=float, metavar="Z", help="plane at this z in µm (any value, not a section index)")
    where.add_argument("--volume", action="store_true",
                       help="a 3D volume over the field's bounds, streamed to disk slab by slab")
    p.add_argument("--shape", type=int, nargs="+", default=None, metavar="N",
                   help="N (longest axis) | NX NY (plane) | NX NY NZ (volume), x first; "
                        "default 512 (plane), 128 (volume)")
    p.add_argument("--extent", type=float, nargs=4, metavar=("XMIN", "XMAX", "YMIN", "YMAX"),
                   help="plane extent in µm (default: the field's bounds)")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="plane: .png (colour) or .tif/.tiff (values); volume: .zarr/.ome.zarr or .tif/.tiff")
    p.add_argument("--colormap", default="magma", help="PNG colormap (napari names; default magma)")
    p.add_argument("--contrast", type=float, nargs=2, metavar=("LO", "HI"),
                   help="contrast limits of the PNG, or stored as display limits of a volume "
                        "(default: 1st–99.5th percentile of the field in tissue)")
    p.add_argument("--no-mask", action="store_true", help="do not mask points outside tissue")
    p.add_argument("--oversample", type=float, default=None, metavar="K",
                   help="band-limited sampling: evaluate K samples per finest field scale and resample "
                        "cubically (much faster for fine grids; default: every pixel/voxel exactly)")
    p.add_argument("--slab-mb", type=float, default=256.0, metavar="MB",
                   help="volume: memory for the values of one slab of z planes (default 256). Peak "
                        "memory is about 1.5× this plus a fixed part (the program, one chunk of network "
                        "evaluation), whatever the volume's size: it is never held whole")
    p.add_argument("--no-pyramid", action="store_true", help="volume, OME-Zarr: full resolution only")
    return p


def _shape(args, volume: bool):
    """(shape in numpy order (z, y, x) / (y, x) or None, longest-axis resolution or None)."""
    shape = list(args.shape) if args.shape else [128 if volume else 512]
    if any(n < 1 for n in shape):
        raise InputError(None, f"--shape must be positive, got {' '.join(map(str, shape))}")
    if volume:
        if len(shape) == 1:
            return None, shape[0]
        if len(shape) == 3:
            nx, ny, nz = shape
            return (nz, ny, nx), None
        raise InputError(None, f"--volume takes --shape N or NX NY NZ, got {len(shape)} numbers")
    if len(shape) == 1:
        return shape[0], None
    if len(shape) == 2:
        nx, ny = shape
        return (ny, nx), None
    raise InputError(None, f"a plane takes --shape N or NX NY, got {len(shape)} numbers")


def run(args) -> int:
    out = Path(args.out)
    volume = bool(args.volume)
    suffix = out.name.lower()
    if volume:
        from ..io.ome import volume_format

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
    if not args.slab_mb > 0:
        raise InputError(None, f"--slab-mb must be > 0, got {args.slab_mb}")
    if args.oversample is not None and not args.oversample >= 1:
        raise InputError(None, f"--oversample must be ≥ 1, got {args.oversample}")
    if args.extent is not None and volume:
        raise InputError(None, "--extent applies to planes only")
    import math

    if args.z is not None and not math.isfinite(args.z):
        raise InputError(None, f"--z must be a finite number of µm, got {args.z:g}")
    if args.extent is not None:
        xmin, xmax, ymin, ymax = args.extent
        if not all(map(math.isfinite, args.extent)) or not (xmax > xmin and ymax > ymin):
            raise InputError(None, f"--extent needs finite XMIN < XMAX and YMIN < YMAX, got "
                                   f"{' '.join(f'{v:g}' for v in args.extent)}")
    if args.contrast is not None and not args.contrast[1] > args.contrast[0]:
        raise InputError(None, f"--contrast needs LO < HI, got {args.contrast[0]:g} {args.contrast[1]:g}")

    from ..field import load_model

    field = load_model(args.model)  # InputError for missing/corrupt/foreign files
    if not volume:
        from ..io.atomic import check_writable

        check_writable(out)  # before evaluating (volumes: the writer checks as it opens)
    from ..render.plane import auto_contrast, gene_indices

    idx = gene_indices(field, args.gene)
    masked = not args.no_mask
    if not volume:
        return _plane(args, out, fmt, field, idx, shape, masked)

    from ..io.atomic import check_free_space
    from ..io.ome import volume_bytes
    from ..render.volume import write_field_volume
    from ..render.grids import VOLUME_MAX_OUT_OF_CORE, volume_grid

    grid = volume_grid(field.bounds(), resolution, shape=shape, budget_bytes=float("inf"),
                       max_axis=VOLUME_MAX_OUT_OF_CORE)
    check_free_space(out, volume_bytes((len(idx), *grid.shape), fmt))
    contrast = [tuple(args.contrast)] * len(idx) if args.contrast else auto_contrast(field, idx)
    t0 = time.perf_counter()

    tty = sys.stderr.isatty()

    def progress(k1, nz):  # on a terminal only (a log gets the final line)
        dt = time.perf_counter() - t0
        eta = dt / k1 * (nz - k1)
        print(f"\rplanes {k1}/{nz}  {dt:.0f} s, ~{eta:.0f} s left ", end="", file=sys.stderr, flush=True)

    # a killed render (SIGTERM/SIGINT → KeyboardInterrupt, installed by the CLI's main) removes its
    # temporary files and the folders it created
    info = write_field_volume(out, field, grid, idx, names=args.gene, masked=masked,
                              oversample=args.oversample, slab_bytes=args.slab_mb * 2**20, contrast=contrast,
                              pyramid=not args.no_pyramid, progress=progress if tty else None)
    print(f"{chr(10) if tty else ''}wrote {out}: {', '.join(args.gene)}, {grid.nx}×{grid.ny}×{grid.nz} voxels (x×y×z) of "
          f"{grid.dx:.3g}×{grid.dy:.3g}×{grid.dz:.3g} µm, {info.get('mode', 'exact')}, "
          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


def _plane(args, out, fmt, field, idx, shape, masked) -> int:
    from ..io.atomic import write_error as _write_error
    from ..render.plane import auto_contrast, evaluate_plane, plane_grid_for

    grid = plane_grid_for(field, args.z, args.extent, shape)
    vals = evaluate_plane(field, grid, idx, masked=masked, oversample=args.oversample)
    try:
        if fmt == "png":
            from ..render.images import colorize, write_image

            lims = tuple(args.contrast) if args.contrast else auto_contrast(field, idx)[0]
            write_image(out, colorize(vals[0], lims, args.colormap))
        else:
            _write_plane_tiff(out, vals, grid, args.gene)
    except OSError as exc:
        raise _write_error(out, exc) from None
    print(f"wrote {out}: {', '.join(args.gene)} at z = {args.z:g} µm, {grid.nx}×{grid.ny} px (x×y) of "
          f"{grid.dx:.3g} µm", file=sys.stderr)
    return 0


def _write_plane_tiff(path, vals, grid, genes):
    import tifffile

    from ..io.atomic import atomic_path

    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, vals.astype("float32"), imagej=True, resolution=(1.0 / grid.dx, 1.0 / grid.dy),
                         metadata={"axes": "CYX", "unit": "um", "Labels": [str(g) for g in genes],
                                   "z_um": float(grid.z), "origin_yx_um": [float(grid.y0), float(grid.x0)]})
