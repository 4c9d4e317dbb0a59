"""napari's File ▸ Open for large section files, off the UI thread.

The npe2 reader must return layers at once, on the UI thread. For section files of
:data:`~napari_inrst.viewer.open_job.ASYNC_BYTES` or more in all, :func:`read_sections` returns
nothing at once (napari: handled, no layers) and hands the paths to the viewer's
:class:`BackgroundOpen`, which reads them in a worker (:func:`~napari_inrst.viewer.open_job.open_sections_job`)
and adds the section layers when they are ready, one layer per event-loop turn. napari calls the
reader once per file (unless ``stack=True``): the calls of one File ▸ Open all come before the
next event-loop turn, so they are collected and read as one stack, as the synchronous reader does.
Smaller files, and calls without a running Qt application, are read at once as before.
"""

import os
import threading
from pathlib import Path

from ..viewer import hooks
from ..viewer.open_job import ASYNC_BYTES, open_sections_job, path_bytes

_OPENERS: dict = {}  # id(viewer) → BackgroundOpen
#: the paths of one File ▸ Open are collected until none came for this long (ms; the reading of
#: the first starts at once, the stack is built once no more came)
COLLECT_MS = 300


def get_reader(path):
    """npe2 reader hook (see :func:`napari_inrst.viewer.hooks.get_reader`): section paths go to
    :func:`read_sections`."""
    reader = hooks.get_reader(path)
    return read_sections if reader is hooks.read_sections_layers else reader


def read_sections(path):
    """Reader for section paths: large ones in the background (see the module notes), else at once."""
    paths = list(path) if isinstance(path, (list, tuple)) else [path]
    viewer = hooks._current_viewer()
    big = path_bytes(paths, cap=ASYNC_BYTES) >= ASYNC_BYTES
    if viewer is None or not _qt_running() or not (big or opener_of(viewer, create=False)):
        return hooks.read_sections_layers(path)
    opener_of(viewer).add(paths)
    return [(None,)]


def _qt_running() -> bool:
    try:
        from qtpy.QtWidgets import QApplication
    except Exception:  # noqa: BLE001 - no Qt binding: read at once
        return False
    return QApplication.instance() is not None


def _later(fn) -> None:
    from qtpy.QtCore import QTimer

    QTimer.singleShot(0, fn)


def opener_of(viewer, create: bool = True):
    """The viewer's :class:`BackgroundOpen` (made on first use; None if none and not ``create``)."""
    op = _OPENERS.get(id(viewer))
    if op is not None and op.viewer is not viewer:
        op = None
    if op is None and create:
        op = _OPENERS[id(viewer)] = BackgroundOpen(viewer)
    return op if op is None or create or op.busy else None


class BackgroundOpen:
    """Reads section paths for ``viewer`` in a worker and adds their layers when ready."""

    def __init__(self, viewer):
        self.viewer = viewer
        self._waiting: list[str] = []
        self._adding: list = []
        self._timer = None
        self._lock = threading.Lock()
        from .workers import Job

        self.job = Job("opening sections", on_progress=self._progress, on_done=self._read,
                       on_finish=self._next, activity=True)

    @property
    def busy(self) -> bool:
        """Paths waiting, being read, or layers not yet added."""
        return bool(self._waiting or self.job.running or self._adding)

    def cancel(self) -> None:
        """Forget waiting paths and layers not yet added; stop the read at its next step."""
        self._waiting.clear()
        self._adding.clear()
        self.job.cancel()

    def add(self, paths) -> None:
        """Read ``paths`` (with the other paths of this File ▸ Open: one stack). napari's ``open``
        runs the event loop between its reader calls (its progress bar): the worker starts on the
        first and takes the others as they come (see :func:`open_sections_job`)."""
        with self._lock:
            self._waiting.extend(os.fspath(p) for p in paths)
        if self.job.running:  # the worker takes them (or, too late for it, the next run)
            return
        if self._timer is None:
            from qtpy.QtCore import QTimer

            self._timer = QTimer()
            self._timer.setSingleShot(True)
            self._timer.setInterval(0)
            self._timer.timeout.connect(self._start)
        self._timer.start()

    def _start(self):
        if self.job.running or self._adding or not self._waiting:
            return
        paths = self._take()
        old = hooks._open_files_stack(self.viewer)
        gene = hooks.stack_gene(self.viewer, old) if old is not None else None
        names = ", ".join(Path(p).name for p in paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        self._say(f"napari-inrst: reading {names} in the background…")
        self.job.start(open_sections_job, paths, old, gene, more=self._take, settle_s=COLLECT_MS / 1e3)

    def _take(self) -> list:
        """The paths waiting, now taken (the worker calls it too: thread-safe)."""
        with self._lock:
            paths, self._waiting = self._waiting, []
        return paths

    def _progress(self, msg):
        self.viewer.status = f"napari-inrst: {msg}"

    def _say(self, msg):
        try:
            from napari.utils.notifications import show_info

            show_info(msg)
        except Exception:  # noqa: BLE001 - a notification must never stop the opening
            pass

    def _read(self, opened):
        """The worker's stacks: join first (UI thread), then add the layers one per turn."""
        for op in opened:
            for note in op.notes:
                hooks._notify_error(note)
            if op.joined is not None and hooks._open_files_stack(self.viewer) is op.joined:
                hooks.attach_joined(self.viewer, op.joined, op.stack, op.gene)
            else:
                hooks._notify_assumptions(op.stack)
            self._adding.extend(op.layer_data)
        _later(self._add_one)

    def _add_one(self):
        if not self._adding:
            self.viewer.status = "napari-inrst: sections open"
            self._start()
            self._forget_if_idle()
            return
        data, kw, _ = self._adding.pop(0)
        self.viewer.add_points(data, **kw)
        _later(self._add_one)

    def _next(self):
        """The worker ended (done, failed or cancelled): paths that came meanwhile are read next."""
        if not self._adding and self._waiting:
            _later(self._start)
        self._forget_if_idle()

    def _forget_if_idle(self):
        """Nothing left to do: the registry lets go of the viewer (a later Open makes a new one)."""
        if not self.busy and _OPENERS.get(id(self.viewer)) is self:
            _OPENERS.pop(id(self.viewer), None)
