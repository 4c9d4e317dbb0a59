"""The ``napari-inrst`` command line: one module per subcommand, all over the same core.

Bad input prints one line ``napari-inrst: error: <file>: <problem>`` and exits with status 2;
nothing is written.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..errors import InputError

#: subcommand → module (each has ``add_parser(subparsers)`` and ``run(args) -> int``)
COMMANDS = ["demo", "fit", "predict", "align", "transforms", "render", "evaluate", "slice", "impute", "qc", "info"]


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line ``napari-inrst: error: <problem>`` (exit 2), like bad input; the
    usage stays one ``--help`` away."""

    def error(self, message):
        sub = self.prog.split(" ", 1)[1] if " " in self.prog else ""
        where = f"{sub}: " if sub else ""
        self.exit(2, f"napari-inrst: error: {where}{' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="napari-inrst",
        description="Continuous 3D expression fields from serial spatial-transcriptomics sections.",
    )
    parser.add_argument("--version", action="version", version=f"napari-inrst {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        mod = importlib.import_module(f".{name}", __name__)
        p = mod.add_parser(sub)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv=None) -> int:
    import signal

    from ..io.atomic import (cleanup_temps, install_signal_handlers, received_signal, restore_signal_handlers,
                             write_error)

    parser = build_parser()
    args = parser.parse_args(argv)
    # SIGTERM/SIGINT → KeyboardInterrupt: every atomic write and writer removes its temporary
    # files; whatever is still registered goes in the finally below (one mechanism, every command)
    installed = install_signal_handlers()
    try:
        return int(args._run(args) or 0)
    except InputError as exc:
        print(f"napari-inrst: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        sig = received_signal()
        if sig == signal.SIGTERM:
            print("napari-inrst: terminated; nothing was written", file=sys.stderr)
            return 128 + signal.SIGTERM
        print("napari-inrst: interrupted; nothing was written", file=sys.stderr)
        return 130
    except OSError as exc:  # an OS error no command turned into an InputError: still one line
        if isinstance(exc, BrokenPipeError):
            return _broken_pipe()
        name = exc.filename or getattr(args, "out", None)
        print(f"napari-inrst: error: {write_error(name, exc) if name else exc.strerror or exc}", file=sys.stderr)
        return 2
    finally:
        cleanup_temps()
        restore_signal_handlers(installed)


def _broken_pipe() -> int:
    # the reader of our stdout went away (`napari-inrst transforms m.inrst | head`): not an
    # error of ours; keep Python from complaining again when it flushes stdout at exit
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
