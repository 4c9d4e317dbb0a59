"""``napari-inrst predict``: evaluate a model at query points from a CSV.

Streams: the queries are read, evaluated and written block by block (:mod:`napari_inrst.io.tables`),
so memory is bounded whatever the number of rows. The output format is chosen by the suffix of
``--out`` through :data:`napari_inrst.io.tables.TABLE_WRITERS` (CSV; another format is one more
writer class there).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

HELP = "predict every modeled gene at query points (CSV with columns x,y,z in µm, stack frame)"


def add_parser(sub):
    p = sub.add_parser("predict", help=HELP, description=HELP + "; writes one column per gene, one row per "
                       "query, in blocks (memory bounded whatever the number of rows; free disk space is "
                       "checked first).")
    p.add_argument("model", metavar="MODEL", help="model file written by 'napari-inrst fit'")
    p.add_argument("--coords", required=True, metavar="Q.csv", help="CSV with columns x, y, z (µm, stack frame)")
    p.add_argument("--out", required=True, metavar="P.csv",
                   help="CSV to write (header = gene names), or P.h5ad: an AnnData (X predictions, "
                        "obsm['spatial'] the query x, y, obs['z'], obs['occupancy'], uns['napari_inrst'])")
    p.add_argument("--masked", action="store_true", help="leave points outside tissue empty (occupancy < 0.5)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (shown only on a terminal anyway)")
    return p


def read_coords(path) -> np.ndarray:
    """All query coordinates of a CSV as (n, 3) float64 (see :func:`napari_inrst.io.tables.iter_coords`)."""
    from ..io.tables import read_coords as _read

    return _read(path)


def block_rows(n_genes: int) -> int:
    from ..io.tables import BLOCK_VALUES

    return int(max(16, min(262_144, BLOCK_VALUES // max(int(n_genes), 1))))


def predict_to(model, coords_path, out_path, *, masked: bool = False, progress=None) -> int:
    """Evaluate ``model`` at every row of ``coords_path`` and write ``out_path`` block by block
    (atomically; the writer is chosen by the suffix). Returns the number of rows written."""
    from ..io.atomic import check_free_space, check_writable
    from ..io.tables import coords_rows, iter_coords, table_writer_for

    writer_cls = table_writer_for(out_path)
    n = coords_rows(coords_path)  # checks the header too
    check_writable(out_path)
    check_free_space(out_path, writer_cls.estimate_bytes(n, len(model.genes)), what="")
    with writer_cls(out_path, model.genes, n_rows=n) as w, _Pipeline(w.write) as pipe:
        for r0, xyz in iter_coords(coords_path, block_rows(len(model.genes))):
            pipe.put(model.predict(xyz, masked=masked))  # formatted and written while the next block is evaluated
            if progress is not None:
                progress(r0 + len(xyz), n)
    return n


class _Pipeline:
    """``put(block)`` hands blocks to ``consume`` on one worker thread, at most ``depth`` waiting
    (memory stays bounded); the worker's error is raised in the caller at the next ``put`` or at
    exit. On an error or interruption in the caller, the worker is stopped and joined."""

    def __init__(self, consume, depth: int = 2):
        import queue
        import threading

        self._consume, self._q = consume, queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._stop = False
        self._t = threading.Thread(target=self._work, name="napari-inrst-writer", daemon=True)

    def _work(self):
        while True:
            item = self._q.get()
            if item is None:
                return
            if self._error is not None or self._stop:
                continue
            try:
                self._consume(item)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                self._error = exc

    def put(self, block):
        if self._error is not None:
            raise self._error
        self._q.put(block)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self._stop = True
            while True:  # drop what waits; the worker finishes the block in hand
                try:
                    self._q.get_nowait()
                except Exception:  # noqa: BLE001 - queue.Empty
                    break
        self._q.put(None)
        self._t.join()
        if exc_type is None and self._error is not None:
            raise self._error
        return False


def _bar(stream):
    t0 = time.perf_counter()

    def progress(done, total):
        dt = time.perf_counter() - t0
        rate = done / dt if dt > 0 else 0.0
        frac = done / total if total else 1.0
        width = 30
        fill = int(round(frac * width))
        eta = (total - done) / rate if rate > 0 else 0.0
        print(f"\r[{'#' * fill}{'.' * (width - fill)}] {done:,}/{total:,} rows, {rate:,.0f} rows/s, "
              f"~{eta:.0f} s left ", end="", file=stream, flush=True)

    return progress


def run(args) -> int:
    from ..field.model import load_model

    model = load_model(args.model)
    if Path(args.out).suffix.lower() == ".h5ad":
        # AnnData for scanpy users (napari_inrst.io.anndata_out): one in-memory table, so the
        # queries must fit in memory (rows × genes × 4 B); CSV output streams whatever the size.
        from ..io.anndata_out import write_predictions_h5ad
        from ..io.atomic import check_free_space, check_writable

        xyz = read_coords(args.coords)
        check_writable(args.out)
        check_free_space(args.out, 4 * len(xyz) * (len(model.genes) + 4) + (1 << 20), what="")
        write_predictions_h5ad(model, xyz, args.out, masked=args.masked)
        if not args.quiet:
            print(f"wrote {args.out}: {len(xyz):,} rows × {len(model.genes)} genes (AnnData)", file=sys.stderr)
        return 0
    tty = sys.stderr.isatty() and not args.quiet
    n = predict_to(model, args.coords, args.out, masked=args.masked, progress=_bar(sys.stderr) if tty else None)
    if tty:
        print(file=sys.stderr)
    if not args.quiet:
        print(f"wrote {args.out}: {n:,} rows × {len(model.genes)} genes", file=sys.stderr)
    return 0
