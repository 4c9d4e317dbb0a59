"""Background work for the widgets, on ``napari.qt.threading.thread_worker`` (the UI thread never
blocks). Two patterns, one class each:

:class:`LatestRequest` — "latest request wins", for views that follow the user (a plane at the
current z and camera, a recolouring): one worker at a time; a new request supersedes the pending
one (the running worker is asked to quit at its next yield, and the newest request starts when it
has finished); what a superseded request still yields or returns is dropped. ::

    self.planes = LatestRequest(render_plane_job, on_yield=self._show, what="plane rendering")
    self.planes.submit(field, grid)        # from any UI event, as often as it likes

:class:`Job` — a cancellable job the user starts (align, train, hold-out check): a generator that
yields progress, errors shown as napari notifications, callbacks on its result and on its end. ::

    self.job = Job("alignment", on_progress=self._progress, on_done=self._aligned,
                   on_finish=self._enable_buttons)
    self.job.start(align_generator, stack)       # returns the worker, or None when one runs
    self.job.cancel()                            # from the Cancel button

Callbacks run on the UI thread (Qt signals). Worker functions run on a thread: they must not touch
Qt widgets or napari layers, only compute and yield.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from typing import Any

from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error


def _as_generator(fn: Callable, args, kwargs):
    """``fn(*args, **kwargs)`` as a generator function body: a generator is run through, a plain
    function's value is returned (so both can run in a generator worker, which can be quit)."""
    out = fn(*args, **kwargs)
    if inspect.isgenerator(out):
        out = yield from out
    return out


def _report(what: str, on_error: Callable | None):
    """The ``errored`` handler: a napari notification, then ``on_error`` (the workers are made with
    ``ignore_errors=True``, so napari does not raise the exception again on the UI thread)."""
    def errored(exc):
        show_error(f"napari-inrst: {what} failed: {exc}")
        if on_error is not None:
            on_error(exc)
    return errored


class LatestRequest:
    """Run ``work(*args, **kwargs)`` of the latest :meth:`submit` in a background worker.

    ``work`` is a generator function (or a plain function); each item it yields goes to
    ``on_yield(item)`` and its return value to ``on_return(value)`` — both on the UI thread, and
    only while the request is the latest one. Errors are shown as napari notifications (prefixed
    ``what``) and passed to ``on_error(exc)`` when given. Keep it as an attribute of its owner.
    """

    def __init__(self, work: Callable, *, on_yield: Callable | None = None,
                 on_return: Callable | None = None, on_error: Callable | None = None,
                 what: str = "background work"):
        self._work = work
        self._on_yield = on_yield
        self._on_return = on_return
        self._errored = _report(what, on_error)
        self._rid = 0  # id of the latest request
        self._worker = None
        self._pending = None  # (rid, args, kwargs) waiting for the running worker to end

    @property
    def rid(self) -> int:
        """Id of the latest request (each :meth:`submit` and :meth:`cancel` increments it)."""
        return self._rid

    @property
    def busy(self) -> bool:
        """True while a worker runs or a request waits for one."""
        return self._worker is not None or self._pending is not None

    def submit(self, *args, **kwargs) -> int:
        """Request ``work(*args, **kwargs)``; supersedes any earlier request. Returns its id."""
        self._rid += 1
        self._pending = (self._rid, args, kwargs)
        if self._worker is not None:
            self._quit()  # its ``finished`` starts the pending request
        else:
            self._start_pending()
        return self._rid

    def cancel(self) -> None:
        """Drop the pending request and ask the running worker to stop; nothing more is delivered
        (e.g. the caller showed a result it computed itself, or the widget closes)."""
        self._rid += 1
        self._pending = None
        self._quit()

    def _quit(self):
        if self._worker is not None:
            with contextlib.suppress(RuntimeError):  # the Qt object may already be gone
                self._worker.quit()

    def _start_pending(self):
        req, self._pending = self._pending, None
        if req is None:
            return
        rid, args, kwargs = req
        w = thread_worker(_as_generator, ignore_errors=True)(self._work, args, kwargs)
        w.yielded.connect(lambda item, r=rid: self._deliver(r, self._on_yield, item))
        w.returned.connect(lambda value, r=rid: self._deliver(r, self._on_return, value))
        w.errored.connect(self._errored)
        w.finished.connect(self._finished)
        self._worker = w
        w.start()

    def _deliver(self, rid, callback, item):
        if callback is not None and rid == self._rid:
            callback(item)

    def _finished(self):
        self._worker = None
        self._start_pending()


class Job:
    """A cancellable background job that the user starts, run by :meth:`start`.

    ``on_progress(item)`` gets what the job yields (a fraction, a message, a record…),
    ``on_done(result)`` its return value (not after a hard cancel), ``on_error(exc)`` an exception
    (after it was shown as a napari notification, prefixed ``what``), ``on_finish()`` is called
    last, always. ``activity``: also show napari's progress bar (titled ``what``) in the activity
    dock. A job can be started again once finished.

    Cancelling sets :meth:`should_stop`, which the job may poll (pass ``job.should_stop`` to the
    core's ``should_stop=`` arguments). With ``quit_on_cancel`` (default) the worker also stops at
    the job's next yield and ``on_done`` is not called; with ``quit_on_cancel=False`` the job
    winds down itself and its return value (e.g. the best weights so far) still reaches ``on_done``.

    Keep a reference to the Job while it runs (an attribute of the widget): its callbacks are
    bound to it, and a Job dropped by its owner may be collected before they fire.
    """

    def __init__(self, what: str, *, on_progress: Callable | None = None, on_done: Callable | None = None,
                 on_error: Callable | None = None, on_finish: Callable | None = None,
                 activity: bool = False, quit_on_cancel: bool = True):
        self.what = what
        self._on_progress = on_progress
        self._on_done = on_done
        self._errored = _report(what, on_error)
        self._on_finish = on_finish
        self._activity = activity
        self._quit_on_cancel = quit_on_cancel
        self._cancelled = False
        self.worker = None

    @property
    def running(self) -> bool:
        return self.worker is not None

    def should_stop(self) -> bool:
        """True once :meth:`cancel` was called for the current run (thread-safe to poll)."""
        return self._cancelled

    def start(self, work: Callable, *args, **kwargs) -> Any:
        """Run ``work(*args, **kwargs)`` (a generator function, or a plain function) in a worker.
        Returns the started worker, or None when this job is already running."""
        if self.worker is not None:
            return None
        self._cancelled = False
        opts = {"progress": {"desc": self.what}} if self._activity else {}
        w = thread_worker(_as_generator, ignore_errors=True, **opts)(work, args, kwargs)
        if self._on_progress is not None:
            w.yielded.connect(self._on_progress)
        if self._on_done is not None:
            w.returned.connect(self._on_done)
        w.errored.connect(self._errored)
        w.finished.connect(self._finished)
        self.worker = w
        w.start()
        return w

    def cancel(self) -> None:
        """Ask the running job to stop (see the class notes); no-op when none runs."""
        if self.worker is None:
            return
        self._cancelled = True
        if self._quit_on_cancel:
            with contextlib.suppress(RuntimeError):
                self.worker.quit()

    def _finished(self):
        self.worker = None
        if self._on_finish is not None:
            self._on_finish()
