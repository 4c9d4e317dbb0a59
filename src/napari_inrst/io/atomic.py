"""Atomic writes: write to a temporary file beside the target, then rename over it.

One mechanism for every command (and the GUI):

* :func:`atomic_path` / :func:`atomic_dir` yield a temporary path beside the target; on success it
  is renamed over the target (a symlinked target is replaced through the link, an existing file
  keeps its mode), on any error or interruption it is removed, together with the folders created
  for it. OS errors (read-only filesystem, no permission, disk full, a parent that is a file)
  become an :class:`~napari_inrst.errors.InputError` naming the target.
* Every temporary path is recorded in a registry while it exists; :func:`cleanup_temps` removes
  whatever is still registered. :func:`install_signal_handlers` (called by the CLI's ``main``) turns
  SIGTERM (and SIGINT) into ``KeyboardInterrupt`` so that the ``finally``/``except`` blocks run, and
  on a second signal removes the registered paths and exits at once.
* :func:`check_writable` and :func:`check_free_space` fail early, before long work.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import stat
import tempfile
import threading
import uuid
from pathlib import Path

from ..errors import InputError

# --- the registry of temporary paths ---------------------------------------------------------
_TEMPS: dict[str, None] = {}
_LOCK = threading.Lock()


def register_temp(path) -> Path:
    """Record ``path`` (file or folder) as temporary: removed by :func:`cleanup_temps` if still there."""
    with _LOCK:
        _TEMPS[os.fspath(path)] = None
    return Path(path)


def unregister_temp(path):
    with _LOCK:
        _TEMPS.pop(os.fspath(path), None)


def registered_temps() -> list[str]:
    with _LOCK:
        return list(_TEMPS)


def _remove(path: str):
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        pass


def cleanup_temps():
    """Remove every registered temporary path (newest first)."""
    with _LOCK:
        paths = list(_TEMPS)[::-1]
        _TEMPS.clear()
    for p in paths:
        _remove(p)


def temp_file_beside(path, *, prefix: str | None = None) -> Path:
    """A new empty registered temporary file beside ``path`` (same folder, hidden name)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=prefix or f".{path.name}.", suffix=".tmp", dir=path.parent)
    register_temp(tmp)
    os.close(fd)
    return Path(tmp)


def temp_dir_beside(path) -> Path:
    """A new empty registered temporary folder beside ``path``."""
    path = Path(path)
    tmp = tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    return register_temp(tmp)


# --- signals --------------------------------------------------------------------------------
_SIGNAL: list[int] = []  # the signals received (first one decides the exit status)


def received_signal() -> int | None:
    """The first SIGTERM/SIGINT received since :func:`install_signal_handlers`, or None."""
    return _SIGNAL[0] if _SIGNAL else None


def _handler(signum, frame):
    _SIGNAL.append(signum)
    if len(_SIGNAL) > 1:  # a second signal while cleaning up: remove what is registered, go
        cleanup_temps()
        os._exit(128 + signum)
    raise KeyboardInterrupt


def install_signal_handlers() -> dict:
    """SIGTERM and SIGINT raise ``KeyboardInterrupt`` (main thread only; elsewhere nothing is
    installed), so every ``atomic_path``/writer cleans up; a second signal cleans the registry and
    exits. Returns the previous handlers, for :func:`restore_signal_handlers`."""
    old: dict = {}
    if threading.current_thread() is not threading.main_thread():
        return old
    _SIGNAL.clear()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError, OSError):
            old[sig] = signal.signal(sig, _handler)
    return old


def restore_signal_handlers(old: dict):
    for sig, h in old.items():
        with contextlib.suppress(ValueError, OSError, TypeError):
            signal.signal(sig, h if h is not None else signal.SIG_DFL)


# --- errors ----------------------------------------------------------------------------------
def write_error(path, exc: OSError) -> InputError:
    """An OSError met while writing ``path`` as a one-line InputError naming ``path`` (an
    InputError is returned as it is)."""
    if isinstance(exc, InputError):
        return exc
    code = getattr(exc, "errno", None)
    why = exc.strerror or str(exc) or type(exc).__name__
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        why = "not enough disk space"
    elif code == errno.EFBIG:
        why = "file too large for the filesystem or the process's file-size limit (disk full?)"
    elif code == errno.EROFS:
        why = "read-only filesystem"
    elif code in (errno.EACCES, errno.EPERM):
        why = "permission denied"
    return InputError(path, f"cannot write: {why}")


def _parent_problem(path: Path) -> InputError | None:
    """A clear message when a folder on the way to ``path`` is a file."""
    for p in path.absolute().parents:
        if p.exists():
            if not p.is_dir():
                return InputError(path, f"cannot write: {p} is a file, not a folder")
            return None
    return None


def make_parents(path) -> list[Path]:
    """Create the missing folders above ``path``; returns those created (outermost first)."""
    path = Path(path)
    missing = []
    p = path.absolute().parent
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    missing.reverse()
    created = []
    try:
        for d in missing:
            try:
                d.mkdir()
            except FileExistsError:
                if not d.is_dir():
                    raise
                continue
            created.append(d)
    except OSError as exc:
        remove_folders(created)
        raise (_parent_problem(path) or write_error(path, exc)) from None
    return created


def remove_folders(created):
    """Remove folders made by :func:`make_parents` (innermost first) if they are still empty."""
    for d in reversed(list(created)):
        with contextlib.suppress(OSError):
            d.rmdir()


def resolve_target(path) -> Path:
    """The file a write to ``path`` should replace: the symlink's target for a symlink."""
    path = Path(path)
    if path.is_symlink():
        return Path(os.path.realpath(path))
    return path


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (setting it is process-wide)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _target_mode(path: Path, default: int) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return default & ~_umask()


def _temp_beside(shown: Path, path: Path, make_temp) -> tuple[Path, list]:
    """The parents of ``path`` made (returned, to remove again on failure) and a temporary
    ``make_temp(path)`` beside it; an OSError becomes an InputError naming ``shown``."""
    created = make_parents(path)
    try:
        return make_temp(path), created
    except OSError as exc:
        remove_folders(created)
        raise (_parent_problem(path) or write_error(shown, exc)) from None


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on error remove it.

    Nothing half-written is ever left at ``path``; an existing file keeps its mode; a symlink at
    ``path`` is written through (its target is replaced). Folders created for ``path`` are removed
    again on failure. OSErrors become :class:`InputError` naming ``path``.
    """
    shown = Path(path)
    path = resolve_target(shown)
    if path.is_dir():
        raise InputError(shown, "is a folder; give a file name")
    tmp, created = _temp_beside(shown, path, temp_file_beside)
    try:
        yield tmp
        if os.path.isfile(tmp):  # mkstemp makes 0600 files: the target's mode, or the usual one
            os.chmod(tmp, _target_mode(path, 0o666))
        os.replace(tmp, path)
        unregister_temp(tmp)
    except BaseException as exc:
        _abandon(tmp, created, shown, exc)
        raise


def replace_dir(tmp, path):
    """Move the finished folder ``tmp`` to ``path`` atomically, replacing a previous one: the old
    one is renamed away (a unique name), the new one renamed in, then the old one deleted.
    Concurrent writers of the same ``path`` each end with a complete folder there."""
    tmp, path = Path(tmp), Path(path)
    for _ in range(50):
        old = None
        if path.exists() or path.is_symlink():
            old = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.old")
            register_temp(old)
            try:
                os.replace(path, old)
            except FileNotFoundError:  # another writer moved it away first
                unregister_temp(old)
                old = None
        try:
            os.replace(tmp, path)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):  # another writer put one there meanwhile
                if old is not None:
                    _remove(os.fspath(old))
                    unregister_temp(old)
                continue
            raise
        unregister_temp(tmp)
        if old is not None:
            _remove(os.fspath(old))
            unregister_temp(old)
        return path
    raise OSError(errno.EBUSY, f"{path} kept being replaced by other writers")


def _abandon(tmp, created, shown, exc):
    """A failed atomic write: remove the temporary file or folder and the parents it created;
    an OSError becomes the one-line write error naming ``shown`` (else the caller re-raises)."""
    _remove(os.fspath(tmp))
    unregister_temp(tmp)
    remove_folders(created)
    if isinstance(exc, OSError) and not isinstance(exc, InputError):
        raise write_error(shown, exc) from None


@contextlib.contextmanager
def atomic_dir(path):
    """Like :func:`atomic_path` for a folder (e.g. a .zarr): yield an empty registered folder
    beside ``path``, moved over ``path`` by :func:`replace_dir` on success, removed on error."""
    shown = Path(path)
    path = resolve_target(shown)
    tmp, created = _temp_beside(shown, path, temp_dir_beside)
    try:
        yield tmp
        replace_dir(tmp, path)
    except BaseException as exc:
        _abandon(tmp, created, shown, exc)
        raise


def check_writable(path, *, what: str = "output"):
    """Fail now (InputError naming ``path``) when ``path`` could not be written later: a parent that
    is a file, a folder at ``path``, a read-only or unwritable folder. Leaves nothing behind."""
    shown = Path(path)
    path = resolve_target(shown)
    if path.is_dir():
        raise InputError(shown, f"is a folder; the {what} must be a file name")
    problem = _parent_problem(path)
    if problem is not None:
        raise problem
    created = make_parents(path)
    try:
        tmp = temp_file_beside(path)
        with open(tmp, "wb") as fh:
            fh.write(b"\0")
        _remove(os.fspath(tmp))
        unregister_temp(tmp)
    except OSError as exc:
        raise write_error(shown, exc) from None
    finally:
        remove_folders(created)


def check_free_space(path, nbytes: int, *, what: str = "(uncompressed)"):
    """InputError naming ``path`` when its filesystem has less than ``nbytes`` free."""
    parent = Path(path).absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    try:
        free = shutil.disk_usage(parent).free
    except OSError:
        return
    if free < nbytes:
        size = f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e7 else f"{nbytes / 1e6:.2f} MB"
        room = f"{free / 1e9:.2f} GB" if free >= 1e7 else f"{free / 1e6:.3f} MB"
        raise InputError(path, f"not enough disk space: needs up to {size}{' ' + what if what else ''}, {room} free")
