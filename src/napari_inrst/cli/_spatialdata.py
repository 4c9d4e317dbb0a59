"""SpatialData stores as the sections of any command that takes sections (fit, align, evaluate, qc)."""

from __future__ import annotations

from ..errors import InputError


def add_spatialdata_options(p):
    g = p.add_argument_group("SpatialData stores (a .zarr written by spatialdata in place of SECTION.h5ad)")
    g.add_argument("--coordinate-system", default="global", metavar="CS",
                   help="coordinate system of the cell/spot centroids (default: global); × --unit-factor → µm")
    g.add_argument("--layer", default=None, metavar="LAYER",
                   help="expression from the table's layers[LAYER] instead of X")
    g.add_argument("--table", default=None, metavar="NAME",
                   help="the table to read when the store has several (default: 'table')")


def any_store(paths) -> bool:
    from ..io.paths import path_kind

    return any(path_kind(p) == "spatialdata" for p in paths)


def store_inputs(args, counts_expected: bool):
    """The SectionInputs of every path (SpatialData stores; raw units, z as recorded)."""
    from ..io.spatialdata import is_spatialdata_store, read_spatialdata

    others = [p for p in args.sections if not is_spatialdata_store(p)]
    if others:
        raise InputError(others[0], "cannot mix SpatialData stores with other inputs; give only stores")
    inputs = []
    for p in args.sections:
        inputs.extend(read_spatialdata(p, table=getattr(args, "table", None),
                                       coordinate_system=getattr(args, "coordinate_system", "global"),
                                       layer=getattr(args, "layer", None),
                                       section_key=getattr(args, "section_key", None),
                                       z_key=getattr(args, "z_key", None), counts_expected=counts_expected))
    return inputs


def load_store_stack(args, *, min_sections: int = 1, n_top_genes=None):
    """SpatialData store(s) → a stack: sections = regions (or --section-key labels) in sorted order,
    z from --z (one per section, in that order), --z-key, or a constant obs['z'] column."""
    from ..stack import build_stack

    inputs = store_inputs(args, counts_expected=args.normalize == "log1p")
    names = [s.name for s in inputs]
    if len(set(names)) != len(names):
        names = [f"{i}:{n}" for i, n in enumerate(names)]
    if args.z is not None:
        if len(args.z) != len(inputs):
            raise InputError(args.sections[0], f"holds {len(inputs)} sections ({', '.join(names)}); give "
                                               f"{len(inputs)} values after --z in that order, or --z-key")
        z = list(args.z)
    elif all(s.z is not None for s in inputs):
        z = [s.z for s in inputs]  # raw units; build_stack applies --unit-factor
    elif getattr(args, "_z_required", False):
        lacking = next(s for s in inputs if s.z is None)
        raise InputError(lacking.source, f"records no z; give {len(inputs)} values after --z (sections "
                                         f"{', '.join(names)}, in that order), or --z-key COLUMN")
    else:  # a 2D command (align): z does not matter
        z = [10.0 * i for i in range(len(inputs))]
    return build_stack([s.adata for s in inputs], z, names=names, sources=[s.source for s in inputs],
                       normalize=args.normalize, gene_policy=args.gene_policy, unit_factor=args.unit_factor,
                       n_top_genes=n_top_genes, min_sections=min_sections)
