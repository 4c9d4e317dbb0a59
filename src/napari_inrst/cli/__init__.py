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
COMMANDS = ["demo", "fit", "predict", "align", "transforms", "render", "evaluate", "slice", "impute", "qc"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except InputError as exc:
        print(f"napari-inrst: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("napari-inrst: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
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
