"""Opening sections in a worker (no Qt): large section files take seconds to minutes to read and
normalize (5 × 200,000 cells: ~50 s here), which napari's File ▸ Open would spend on the UI
thread. :func:`open_sections_job` does the reading, the stack and the layers' data (level-of-detail
subsample, colours) as a generator that yields progress messages; only adding the finished layers
is left to the UI thread (``_qt/opener.py``). The same rules as the synchronous reader
(:func:`~napari_inrst.viewer.hooks.read_sections_layers`): a folder is one stack, loose files make
ONE stack together, joining the loose-file stack already open."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

#: section files at least this large in all (bytes on disk) are read in a worker by napari's
#: File ▸ Open; smaller ones are read at once (a second or so), as before
ASYNC_BYTES = 32 * 2**20


def path_bytes(paths, cap: int = 2**40) -> int:
    """Bytes on disk of ``paths`` (files; folders summed over their files, stopping past ``cap``)."""
    total = 0
    for p in paths:
        p = Path(os.fspath(p))
        if p.is_file():
            total += p.stat().st_size
        elif p.is_dir():
            for root, _, names in os.walk(p):
                for n in names:
                    try:
                        total += os.stat(os.path.join(root, n)).st_size
                    except OSError:
                        pass
                if total > cap:
                    return total
        if total > cap:
            break
    return total


def warm_units() -> None:
    """Load pint's unit registry, which napari uses to parse each layer's units ("µm"): it loads on
    first use (~0.3 s here, 0.8 s with the import), on the UI thread when the first layer is added,
    unless a worker has loaded it before."""
    try:
        import pint

        pint.get_application_registry().Unit("µm")
    except Exception:  # noqa: BLE001 - only a head start; napari loads it itself otherwise
        pass


@dataclass
class Opened:
    """One stack read by :func:`open_sections_job`: its layer data (for the new sections only when
    ``joined``, the open stack ``joined`` whose layers move onto ``stack``), its gene and notes
    (errors that did not stop the opening) for the UI thread."""

    stack: object
    layer_data: list
    joined: object = None
    gene: str | None = None
    notes: list = field(default_factory=list)


def open_sections_job(paths, old=None, old_gene: str | None = None, more=None, settle_s: float = 0.0):
    """Read ``paths`` (files and folders) into stacks: each folder its own stack, the files one
    stack, joined with ``old`` (the loose-file stack open in the viewer, its layers showing
    ``old_gene``) when they can join. ``more()`` (optional) returns paths that came meanwhile (the
    other reader calls of the same File ▸ Open): asked after each file and, before the stack is
    built, until it has returned nothing for ``settle_s`` seconds. Yields messages; returns a
    list of :class:`Opened`."""
    import time

    from .hooks import (
        _inputs_from_path,
        _stack_from_path,
        joined_stack,
        stack_from_section_inputs,
    )
    from .layers import default_gene, gene_contrast, section_points, stack_layer_data

    warm_units()
    todo = [os.fspath(p) for p in paths]
    out, inputs, n_files = [], [], 0

    def take():
        new = [os.fspath(p) for p in (more() if more is not None else [])]
        todo.extend(new)
        return bool(new)

    while True:
        while todo:
            p = todo.pop(0)
            if Path(p).is_dir():
                yield f"reading {Path(p).name}…"
                stack = _stack_from_path(p)
                yield f"colouring {len(stack)} sections…"
                out.append(Opened(stack, stack_layer_data(stack)))
            else:
                n_files += 1
                yield f"reading {Path(p).name} ({n_files})…"
                inputs.extend(_inputs_from_path(p))
            take()
        t = time.monotonic()
        while not take() and time.monotonic() - t < settle_s:
            time.sleep(0.02)
        if not todo:
            break
    if inputs:
        yield f"building the stack of {len(inputs)} sections…"
        both, notes = None, []
        if old is not None:
            try:
                both = joined_stack(old, inputs)
            except InputError as exc:
                notes.append(str(InputError(", ".join(i.source for i in inputs),
                                            f"opened as its own stack: cannot join the open sections ({exc})")))
        if both is not None:
            gene = old_gene if old_gene in both.genes else default_gene(both)
            contrast = gene_contrast(both, gene)
            data = [section_points(both, i, gene, contrast=contrast) for i in range(len(old), len(both))]
            out.append(Opened(both, data, joined=old, gene=gene, notes=notes))
        else:
            stack = stack_from_section_inputs(inputs, opened_as="files")
            yield f"colouring {len(stack)} sections…"
            out.append(Opened(stack, stack_layer_data(stack), notes=notes))
    return out
