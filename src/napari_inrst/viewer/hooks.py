"""npe2 contributions that need no Qt: readers (sections; OME-Zarr volumes written by this plugin)
and sample data (see ``napari.yaml``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from .layers import stack_layer_data

#: z spacing (µm) used when files do not record their z.
DEFAULT_SPACING_UM = 10.0


def _notify_error(exc: Exception):
    try:
        from napari.utils.notifications import show_error

        show_error(str(exc))
    except Exception:  # noqa: BLE001 - notification must never mask the error itself
        pass


def _inputs_from_path(path):
    from ..io.paths import read_path

    return read_path(path)


def stack_from_section_inputs(inputs, *, spacing: float = DEFAULT_SPACING_UM, normalize: str | None = None,
                              opened_as: str = "files"):
    """One stack from sections read by the reader (in order). z: what the files record, else
    ``index × spacing`` µm — recorded in ``stack.report['z_assumed']`` and said by
    :meth:`~napari_inrst.stack.SectionStack.summary` (the Sections widget lets the user set it).
    Normalization: ``log1p`` when every section holds counts, else ``none``. The inputs stay on
    the stack (``stack.inputs``) for later changes (another normalization, more sections)."""
    import numpy as np

    from ..stack import build_stack, estimate_spacing

    if normalize is None:
        normalize = "log1p" if all(_looks_like_counts(i.adata.X) for i in inputs) else "none"
    recorded = [i.z for i in inputs]
    assumed = None
    if all(v is not None for v in recorded):
        z = recorded
    else:
        z = [k * spacing for k in range(len(inputs))]
        assumed = {"spacing_um": float(spacing), "sections": [i.name for i, v in zip(inputs, recorded) if v is None]}
    stack = build_stack([i.adata for i in inputs], z, names=[i.name for i in inputs],
                        sources=[i.source for i in inputs], normalize=normalize)
    stack.inputs = list(inputs)
    stack.report["opened_as"] = opened_as
    if assumed:
        stack.report["z_assumed"] = assumed
    nn = float(np.median([estimate_spacing(s.xy_input, sample=500) for s in stack.sections]))
    if nn < 3.0:  # cells/spots are ≥ ~3 µm apart: these look like array indices or another unit
        stack.report["units_suspect"] = nn
    return stack


def _stack_from_path(path):
    return stack_from_section_inputs(_inputs_from_path(path), opened_as="folder" if Path(path).is_dir() else "files")


def _looks_like_counts(X, n: int = 20000) -> bool:
    import numpy as np

    v = X.data if hasattr(X, "data") and hasattr(X, "indptr") else np.asarray(X).ravel()
    v = np.asarray(v[:n])
    return bool(v.size == 0 or ((v >= 0).all() and np.allclose(v, np.round(v))))


def _open_files_stack(viewer):
    """The stack of loose files (not a folder) already open in ``viewer``, if any."""
    if viewer is None:
        return None
    from .layers import STACK_KEY

    for layer in reversed(list(viewer.layers)):
        st = getattr(layer, "metadata", {}).get(STACK_KEY)
        if st is not None:
            ok = st.report.get("opened_as") == "files" and getattr(st, "inputs", None) is not None
            return st if ok else None
    return None


def _current_viewer():
    try:
        from napari import current_viewer

        return current_viewer()
    except Exception:  # noqa: BLE001 - no viewer (a script calling the reader): nothing to join
        return None


def read_sections_layers(path):
    """Reader: a path (or several: ``File ▸ Open File(s)`` with or without ``stack=True``) → one
    Points layer per section, all sections in ONE stack.

    napari calls a reader once per file unless the files are opened as a stack; a single
    section file opened while the viewer holds a stack of loose files joins that stack (its
    layers move onto the joined stack), so opening 4 files gives one stack of 4 sections either
    way. Errors become a napari notification naming the file."""
    paths = list(path) if isinstance(path, (list, tuple)) else [path]
    try:
        if len(paths) == 1 and Path(os.fspath(paths[0])).is_dir():
            stack = _stack_from_path(paths[0])
            _notify_assumptions(stack)
            return stack_layer_data(stack)
        inputs = [i for p in paths for i in _inputs_from_path(p)]
        viewer = _current_viewer()
        old = _open_files_stack(viewer)
        if old is not None:
            joined = _join(viewer, old, inputs)
            if joined is not None:
                return joined
        stack = stack_from_section_inputs(inputs, opened_as="files")
    except InputError as exc:
        _notify_error(exc)
        return [(None,)]  # npe2: a reader that handled the path but produced nothing
    _notify_assumptions(stack)
    return stack_layer_data(stack)


def _notify_assumptions(stack):
    notes = stack.assumptions()
    if notes:
        try:
            from napari.utils.notifications import show_info

            show_info("napari-inrst: " + "; ".join(notes))
        except Exception:  # noqa: BLE001
            pass


def joined_stack(old, inputs):
    """The loose-file stack ``old`` with the sections ``inputs`` added (a new stack; ``old`` is not
    changed; no layers touched, so a worker may call it): z set by the user continues at its
    spacing, unit factor, transforms and exclusions carry over. None when a section of the same
    name is already in it (the same file again: its own stack); InputError when they cannot join
    (no shared genes, another kind of values)."""
    names = set(old.names)
    if any(i.name in names for i in inputs):
        return None
    both = stack_from_section_inputs(list(old.inputs) + list(inputs), opened_as="files")
    if old.report.get("z_set_by_user"):
        step = (old.z[-1] - old.z[-2]) if len(old) > 1 else DEFAULT_SPACING_UM
        both.set_z(list(old.z) + [float(old.z[-1] + step * (k + 1)) for k in range(len(inputs))])
    both.set_unit_factor(old.unit_factor)
    for s_new, s_old in zip(both.sections, old.sections):
        s_new.transform = np.array(s_old.transform, dtype=float)
        s_new.excluded = s_old.excluded
    return both


def stack_gene(viewer, stack):
    """The gene the section layers of ``stack`` show (None if none)."""
    from .layers import SECTION_KEY, STACK_KEY

    return next((lyr.metadata.get("gene") for lyr in viewer.layers
                 if getattr(lyr, "metadata", {}).get(STACK_KEY) is stack and SECTION_KEY in lyr.metadata
                 and lyr.metadata.get("gene")), None)


def attach_joined(viewer, old, both, gene=None):
    """Move the layers of ``old`` onto the joined stack ``both`` (positions, colours by ``gene``,
    metadata; UI thread) and say what changed in the assumptions; returns the gene shown."""
    from .layers import SECTION_KEY, STACK_KEY, refresh_section_layers

    for layer in list(viewer.layers):
        md = getattr(layer, "metadata", {})
        if md.get(STACK_KEY) is old and SECTION_KEY in md:
            md[STACK_KEY] = both
    refresh_section_layers(viewer.layers, both, gene=gene)
    gene = stack_gene(viewer, both) or gene
    kinds = ("z_assumed", "units_suspect")
    if {k for k in kinds if both.report.get(k)} != {k for k in kinds if old.report.get(k)}:
        _notify_assumptions(both)
    return gene


def _join(viewer, old, inputs):
    """Add the sections ``inputs`` to the loose-file stack ``old`` in ``viewer``: the old layers
    move onto the joined stack (positions, colours, metadata); returns the new sections' layer
    data, or None when they cannot join (no shared genes, another kind of values)."""
    from .layers import gene_contrast, section_points

    try:
        both = joined_stack(old, inputs)
    except InputError as exc:
        _notify_error(InputError(", ".join(i.source for i in inputs),
                                 f"opened as its own stack: cannot join the open sections ({exc})"))
        return None
    if both is None:
        return None
    gene = attach_joined(viewer, old, both, stack_gene(viewer, old))
    contrast = gene_contrast(both, gene)
    return [section_points(both, i, gene, contrast=contrast) for i in range(len(old), len(both))]


def read_volume_layers(path):
    """Reader: an OME-Zarr written by napari-inrst → one Image layer per gene, backed lazily by the
    zarr arrays (dask; every pyramid level, multiscale), with voxel size and origin in µm."""
    if isinstance(path, list):
        out = []
        for p in path:
            out.extend(read_volume_layers(p))
        return out
    from ..io.ome import open_volume_levels

    p = Path(os.fspath(path))
    try:
        levels, meta = open_volume_levels(p)
    except InputError as exc:
        _notify_error(exc)
        return [(None,)]
    except Exception as exc:  # noqa: BLE001 - a damaged store: one line, never a traceback
        _notify_error(InputError(p, f"cannot read this OME-Zarr ({type(exc).__name__}: {exc})"))
        return [(None,)]
    genes = meta["genes"] or [f"c{i}" for i in range(levels[0].shape[0])]
    lims = meta["contrast_limits"]
    cmaps = ["magma", "magenta", "green", "cyan", "yellow", "red", "blue"]
    stem = p.name.split(".")[0]
    out = []
    for i, gene in enumerate(genes):
        data = [lvl[i] for lvl in levels]  # dask slicing: still lazy
        kwargs = {
            "name": f"{gene} · {stem}",
            "scale": tuple(meta["scale_zyx"]),
            "translate": tuple(meta["translate_zyx"]),
            "units": "µm",
            "axis_labels": ("z", "y", "x"),
            "colormap": cmaps[i % len(cmaps)],
            "blending": "translucent_no_depth" if i == 0 else "additive",
            "rendering": "mip",
            "metadata": {"inrst_volume": str(p), "gene": gene},
        }
        if len(data) > 1:
            kwargs["multiscale"] = True
        else:
            data = data[0]
        if i < len(lims):
            kwargs["contrast_limits"] = tuple(lims[i])
        out.append((data, kwargs, "image"))
    return out


def get_reader(path):
    """npe2 reader hook: a reader function for paths we understand (:func:`~napari_inrst.io.paths.path_kind`),
    else None. Only names and small metadata files are looked at."""
    from ..io.paths import SECTION_KINDS, path_kind

    kinds = [path_kind(p) for p in (path if isinstance(path, list) else [path])]
    if all(k == "volume" for k in kinds):
        return read_volume_layers
    if all(k in SECTION_KINDS for k in kinds):
        return read_sections_layers
    return None


def synthetic_sample():
    """Sample data: the synthetic tissue, 8 measured sections (misplaced, one mirrored)."""
    from ..synthetic.sample import sample_stack

    stack, _ = sample_stack()
    return stack_layer_data(stack, gene="LayerB")


def synthetic_sample_aligned():
    """Sample data: the synthetic tissue with every section in its true place."""
    from ..synthetic.sample import sample_stack

    stack, _ = sample_stack(misplace=False)
    return stack_layer_data(stack, gene="LayerB")
