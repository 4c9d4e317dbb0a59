"""Run the napari-inrst CLI in this process under a simulated fault; used by tests/cli/test_faults.py.

    python tests/cli/_fault_runner.py FAULT ROOT napari-inrst-args...

FAULT: ``none``; ``ro`` (every write under ROOT fails with EROFS, as on a read-only mount: works as
root, where chmod does not stop writes); ``full`` (files may not grow beyond 4 KiB: RLIMIT_FSIZE,
writes fail with EFBIG as on a full disk); ``term-at-rename`` (SIGTERM arrives just before a
temporary file under ROOT is renamed into place: the window where a killed command would leave
it behind).
"""

from __future__ import annotations

import builtins
import errno
import os
import signal
import sys


def _under(root: str, path) -> bool:
    try:
        p = os.path.abspath(os.fspath(path))
    except TypeError:
        return False
    return p == root or p.startswith(root + os.sep)


def read_only(root: str, patch=setattr):
    """Make every write under ``root`` fail with EROFS; ``patch(obj, name, value)`` installs each
    replacement (``setattr``, or pytest's ``monkeypatch.setattr`` to have them undone)."""
    def deny(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))

    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir
    real_replace, real_rename = os.replace, os.rename

    def open_(file, mode="r", *a, **k):
        if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+") and _under(root, file):
            deny(file)
        return real_open(file, mode, *a, **k)

    def os_open(path, flags, *a, **k):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and _under(root, path):
            deny(path)
        return real_os_open(path, flags, *a, **k)

    def mkdir(path, *a, **k):
        if _under(root, path):
            deny(path)
        return real_mkdir(path, *a, **k)

    def replace(src, dst, *a, **k):
        if _under(root, dst):
            deny(dst)
        return real_replace(src, dst, *a, **k)

    patch(builtins, "open", open_)
    patch(os, "open", os_open)
    patch(os, "mkdir", mkdir)
    patch(os, "replace", replace)
    patch(os, "rename", lambda s, d, *a, **k: replace(s, d) if _under(root, d) else real_rename(s, d, *a, **k))


def _term_at_rename(root: str):
    real_replace = os.replace

    def replace(src, dst, *a, **k):
        if _under(root, dst) and ".tmp" in os.path.basename(os.fspath(src)):
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before the rename
        return real_replace(src, dst, *a, **k)

    os.replace = replace


def main():
    fault, root, argv = sys.argv[1], os.path.abspath(sys.argv[2]), sys.argv[3:]
    if fault == "ro":
        read_only(root)
    elif fault == "full":
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    elif fault == "term-at-rename":
        _term_at_rename(root)
    elif fault != "none":
        raise SystemExit(f"unknown fault {fault}")
    from napari_inrst.cli import main as cli_main

    sys.exit(cli_main(argv))


if __name__ == "__main__":
    main()
