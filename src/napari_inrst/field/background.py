"""Train a field in a child process, so that an interactive viewer stays responsive.

In one process, training and napari's UI share one interpreter lock (the GIL): every stretch of
Python the training thread runs (the step loop between torch calls, validation, progress
records, checkpoints, preview rendering) is time the UI thread waits, and the torch threads
compete with it for the cores on equal terms. :class:`ChildFit` runs :func:`~.train.iter_fit`
in a child process started with the ``spawn`` method (a fresh interpreter: no fork of a process
that runs Qt) at a lower CPU priority (``os.nice``), so the operating system lets the UI run
first whenever it has work. Its :meth:`ChildFit.run` is a generator with ``iter_fit``'s
protocol — it yields the same progress records and returns the :class:`~.model.FieldModel` — so
a GUI worker can use either. Cancel keeps the best weights and Resume continues from a
checkpoint exactly as in-process: ``should_stop``, ``checkpoint`` and ``resume`` reach
``iter_fit`` in the child unchanged.

Transport (no pickled model): the stack goes to the child as the start arguments of the process
(multiprocessing's transport between two processes of this program); progress records,
status lines and small results come back through a queue; the fitted model comes back as a
model file (:meth:`FieldModel.save`: safetensors + JSON, written atomically into a private
temporary folder) read with :func:`~.model.load_model`, which validates it like any model file.

``observer``: an optional picklable object that lives in the child and sees every progress
record with its ``snapshot()`` (a FieldModel of the current weights): ``observer(record,
snapshot)`` returns a dict merged into the record sent back (e.g. a rendered preview), and
``observer.final(field)`` one merged into the end result (:attr:`ChildFit.extras`); messages
the parent sends with :meth:`ChildFit.send` reach ``observer.update(**message)`` before the
next record is handled. The view model of the Train widget uses it to render its preview in the
child (:mod:`napari_inrst.viewer.train_state`).
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import sys
import tempfile
import types
from collections.abc import Callable
from pathlib import Path

#: niceness added to the child (POSIX): the UI process wins the CPU whenever it needs it
CHILD_NICE = 10
#: how often the parent checks for cancel and a dead child while waiting for records (s)
POLL_S = 0.05


@contextlib.contextmanager
def _main_script_hidden():
    """While a spawned child is started: the child needs nothing from the parent's main script,
    and multiprocessing would run a script's top level again in the child (a napari script
    without an ``if __name__ == "__main__"`` guard would open a second viewer there). A main
    run with ``-m`` (``python -m napari``, pytest) or without a file is skipped by
    multiprocessing itself; a script is hidden behind an empty ``__main__`` for that moment."""
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__spec__", None) is not None or not getattr(main, "__file__", None):
        yield
        return
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def prepare_stack(stack, genes=None, *, copy: bool = False, log=None):
    """The stack a field is trained on: ``genes`` None/int → the default gene rule / that many
    (:func:`napari_inrst.stack.prepare.prepare_for_field`); a list of names → exactly those (a resumed
    run). ``copy=True`` leaves ``stack`` untouched."""
    from ..stack.prepare import prepare_for_field, restrict_genes

    if genes is None or isinstance(genes, int):
        return prepare_for_field(stack, genes, copy=copy, log=log)
    index = {g: i for i, g in enumerate(stack.genes)}
    missing = [g for g in genes if g not in index]
    if missing:
        from ..errors import InputError

        raise InputError(None, f"the stack lacks {len(missing)} gene(s) of the run being resumed "
                               f"({', '.join(missing[:3])})")
    if copy:
        stack = stack.select(range(len(stack)))
    restrict_genes(stack, [index[g] for g in genes], "the genes of the run being resumed")
    if log is not None:
        log(f"modeling the {len(genes)} genes of the run being resumed")
    return stack


def placement_of(stack) -> dict:
    """Where ``stack``'s sections lie (names, transforms, deformations as a model stores them):
    what a resumed run puts back instead of refining again."""
    from ..align.deform import deformations_json, get_deformations

    return {"names": list(stack.names), "transforms": [m.tolist() for m in stack.transforms()],
            "deformation": deformations_json(stack.names, get_deformations(stack))}


def refine_for_fit(stack, config, *, deform: bool = True, placement: dict | None = None, log=None,
                   should_stop=None):
    """Before the fit, as ``napari-inrst fit --deform`` does: the field-driven refinement with
    per-section deformation grids (:func:`napari_inrst.field.refine.refine_for_fit`, the middle
    section fixed), written into ``stack`` (in place). With ``placement`` (:func:`placement_of` of
    an earlier run: a resumed fit) that placement is put back instead. Returns the
    :class:`~napari_inrst.field.refine.RefineResult`, or None (placement put back, or fewer than 2
    training sections)."""
    import numpy as np

    from ..align.deform import deformations_from_meta, set_deformations

    if placement is not None:
        stack.set_transforms([np.asarray(m, dtype=np.float64) for m in placement["transforms"]])
        set_deformations(stack, deformations_from_meta(placement) or [None] * len(stack))
        return None
    if len(stack.training_sections()) < 2:
        return None
    from . import refine

    if log is not None:
        log("refining the alignment and fitting a deformation per section against half fields (as fit --deform)")
    return refine.refine_for_fit(stack, config, deform=deform, log=log, should_stop=should_stop)


def record_refinement(field, res) -> None:
    """What ``fit`` records of a refinement in the model (``stack_meta['refinement']``, provenance)."""
    if res is not None:
        field.stack_meta["refinement"] = res.to_meta()
        field.provenance["refine_seconds"] = round(float(res.seconds), 2)


def _niceness() -> int | None:
    try:
        return os.nice(0)
    except (OSError, AttributeError):
        return None


def _drain(requests, observer):
    while True:
        try:
            msg = requests.get_nowait()
        except queue.Empty:
            return
        if observer is not None:
            observer.update(**msg)


def _child(events, requests, stop, stack, genes, config, checkpoint, resume, model_path, observer, nice,
           deform=False, placement=None):
    """The child process: prepare, train, send records; save the model; say done or the error."""
    try:
        def status(msg):
            events.put(("status", str(msg)))

        status("starting the training process")
        from .fit import (
            iter_fit,  # (imports at the parent's priority: the first record comes sooner)
        )

        if nice:  # then the work itself at a lower priority: the viewer wins the cores
            with contextlib.suppress(OSError, AttributeError):  # (not on Windows)
                os.nice(int(nice))
        events.put(("started", {"pid": os.getpid(), "nice": _niceness()}))
        prepared = prepare_stack(stack, genes, log=status)
        events.put(("prepared", list(prepared.genes)))
        parent = os.getppid()

        def should_stop():  # cancelled, or the parent is gone
            return stop.is_set() or os.getppid() != parent

        refined = None
        if deform or placement is not None:
            refined = refine_for_fit(prepared, config, placement=placement, log=status, should_stop=should_stop)
            events.put(("placed", placement_of(prepared)))

        gen = iter_fit(prepared, config, should_stop=should_stop, checkpoint=checkpoint, resume=resume,
                       on_status=status)
        while True:
            try:
                d = next(gen)
            except StopIteration as done:
                field = done.value
                break
            _drain(requests, observer)
            snap = d.pop("snapshot", None)
            if observer is not None:
                d.update(observer(d, snap) or {})
            events.put(("progress", d))
        _drain(requests, observer)
        extras = (observer.final(field) or {}) if observer is not None else {}
        record_refinement(field, refined)
        field.save(model_path)
        events.put(("done", extras))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
        from ..errors import InputError

        events.put(("error", {"type": type(exc).__name__, "message": str(exc),
                              "input": isinstance(exc, InputError), "source": getattr(exc, "source", None),
                              "problem": getattr(exc, "problem", None)}))


def _rebuild(err: dict) -> Exception:
    """The child's exception, raised again in the parent (InputError keeps its file/problem)."""
    from ..errors import InputError

    if err.get("input"):
        return InputError(err.get("source"), err.get("problem") or err["message"])
    return RuntimeError(f"{err['type']}: {err['message']}" if err["message"] else err["type"])


class ChildFit:
    """One fit of ``stack`` with ``config`` in a child process (see the module notes).

    ``genes``: None = the default gene rule, an int = that many genes, a list of names = exactly
    those (a resumed run). After the run, :attr:`genes` holds the genes the child modeled and
    :attr:`extras` what ``observer.final`` returned. The child is stopped and its temporary
    folder removed when :meth:`run` ends, however it ends (also when the generator is closed).
    ``deform``: first refine the transforms with deformation grids, as ``fit --deform``
    (:func:`refine_for_fit`); ``placement``: put an earlier run's placement back instead (Resume);
    either way :attr:`placement` holds where the sections were trained (:func:`placement_of`).
    """

    def __init__(self, stack, config, *, genes=None, checkpoint=None, resume=None, observer=None,
                 nice: int = CHILD_NICE, deform: bool = False, placement: dict | None = None):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self._events = ctx.Queue()
        self._requests = ctx.Queue()
        self._stop = ctx.Event()
        self._dir = Path(tempfile.mkdtemp(prefix="inrst-fit-"))
        self.model_path = self._dir / "field.inrst"
        self.genes: list[str] | None = None
        self.extras: dict = {}
        self.exitcode: int | None = None
        self.child_info: dict = {}  # {"pid", "nice"} of the child once it has started
        self.placement: dict | None = None
        self._proc = ctx.Process(
            target=_child, name="napari-inrst-fit", daemon=True,
            args=(self._events, self._requests, self._stop, stack, genes, config,
                  None if checkpoint is None else str(checkpoint), None if resume is None else str(resume),
                  str(self.model_path), observer, nice, bool(deform), placement))

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def send(self, **message):
        """A message for ``observer.update(**message)`` in the child (e.g. a new preview gene)."""
        self._requests.put(dict(message))

    def cancel(self):
        """Stop at the next step; the child still returns the best weights so far."""
        self._stop.set()

    def run(self, *, should_stop: Callable[[], bool] | None = None, on_status: Callable[[str], None] | None = None,
            on_prepared: Callable[[list], None] | None = None):
        """Start the child; yield its progress records; return the fitted FieldModel.

        ``should_stop()`` is polled while waiting (True → :meth:`cancel`); ``on_status(str)``
        hears the child's status lines, ``on_prepared(genes)`` the genes it models. An error in
        the child is raised here (an :class:`~napari_inrst.errors.InputError` as such)."""
        with _main_script_hidden():
            self._proc.start()
        try:
            while True:
                if should_stop is not None and not self._stop.is_set() and should_stop():
                    self.cancel()
                event = self._next_event()
                if event is None:
                    continue
                kind, payload = event
                if kind == "started":
                    self.child_info = payload
                elif kind == "status":
                    if on_status is not None:
                        on_status(payload)
                elif kind == "prepared":
                    self.genes = payload
                    if on_prepared is not None:
                        on_prepared(payload)
                elif kind == "placed":
                    self.placement = payload
                elif kind == "progress":
                    yield payload
                elif kind == "error":
                    raise _rebuild(payload)
                elif kind == "done":
                    from .model import load_model

                    self.extras = payload
                    return load_model(self.model_path)
        finally:
            self.close()

    def _next_event(self):
        """The next (kind, payload) from the child; None after ``POLL_S`` without one."""
        try:
            return self._events.get(timeout=POLL_S)
        except queue.Empty:
            if self._proc.is_alive():
                return None
        try:  # what an ended child still had in flight
            return self._events.get(timeout=1.0)
        except queue.Empty:
            raise RuntimeError(f"the training process ended unexpectedly (exit code {self._proc.exitcode})") from None

    def close(self, timeout: float = 10.0):
        """Stop the child (cancel, then terminate after ``timeout`` s) and remove its files."""
        self._stop.set()
        if self._proc.pid is not None:
            self._proc.join(timeout)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(2.0)
            self.exitcode = self._proc.exitcode
        for q in (self._events, self._requests):
            q.cancel_join_thread()
            q.close()
        shutil.rmtree(self._dir, ignore_errors=True)
