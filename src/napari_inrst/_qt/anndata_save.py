"""Results to AnnData from the widgets: "Save virtual section…" (View field) and "Save to
AnnData…" (QC). Thin: the work is :mod:`napari_inrst.io.anndata_out`, run in a
``Job`` (:mod:`.workers`); errors become napari notifications.

Each ``*_dialog(widget)`` asks for a file and calls the matching ``start_*`` (tests call those
directly); ``start_*`` returns the started worker (or None when there is nothing to save).
"""

from __future__ import annotations

from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QFileDialog

from .workers import Job

#: running saves (a Job must outlive the call that started it)
_SAVES: set = set()


def _run(work, what: str):
    """Run ``work()`` (returns the path written) as a :class:`~.workers.Job`: "saved PATH" when it
    is done, a napari notification ("napari-inrst: WHAT failed: …") when it fails."""
    job = Job(what, on_done=lambda path: show_info(f"saved {path}"), on_finish=lambda: _SAVES.discard(job))
    _SAVES.add(job)
    return job.start(work)


def start_save_virtual_section(widget, path, spacing: float | None = None):
    """Write the virtual section at the current z of ``widget`` (the View widget or its view model:
    anything with ``field`` and ``z``) — pseudo-spots inside the tissue, the field's expression
    there — to ``path`` (.h5ad, or .zarr for SpatialData)."""
    from ..io.anndata_out import save_virtual_section

    field = widget.field
    if field is None:
        show_error("napari-inrst: no field to slice: train one or load a model first")
        return None
    z = float(widget.z)

    def work():
        save_virtual_section(field, z, path, spacing)
        return path

    return _run(work, "saving the virtual section")


def save_virtual_section_dialog(widget, view=None):
    """Ask for a file (dialog over ``widget``) and save the virtual section of ``view`` (anything
    with ``field`` and ``z``, e.g. the View widget's view model; default ``widget``)."""
    view = widget if view is None else view
    if view.field is None:
        show_error("napari-inrst: no field to slice: train one or load a model first")
        return None
    path, _ = QFileDialog.getSaveFileName(widget, "Save virtual section", f"virtual_z{view.z:g}.h5ad",
                                          "AnnData (*.h5ad);;SpatialData (*.zarr)")
    return start_save_virtual_section(view, path) if path else None


def start_save_qc(widget, path):
    """Write the QC widget's sections with their per-section scores and damaged flags (``obs``)
    and the results table (``uns['napari_inrst_qc']``) to ``path``."""
    from ..io.anndata_out import save_qc

    rows = getattr(widget, "consistency", None)
    stack = getattr(widget, "stack", None)
    if not rows or stack is None:
        show_error("napari-inrst: no QC results yet: run 'Check every section' first")
        return None
    rows = list(rows)

    def work():
        from ..evaluate.checks import FLAG_Z

        return save_qc(stack, rows, path, flag_z=FLAG_Z)

    return _run(work, "saving the QC results")


def save_qc_dialog(widget):
    if not getattr(widget, "consistency", None):
        show_error("napari-inrst: no QC results yet: run 'Check every section' first")
        return None
    path, _ = QFileDialog.getSaveFileName(widget, "Save QC results to AnnData", "qc_sections.h5ad",
                                          "AnnData (*.h5ad)")
    return start_save_qc(widget, path) if path else None
