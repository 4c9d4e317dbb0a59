"""``napari-inrst evaluate``."""

from __future__ import annotations

import sys

HELP = "evaluate (not yet available in this version)"


def add_parser(sub):
    p = sub.add_parser("evaluate", help=HELP, description=HELP)
    return p


def run(args) -> int:
    print("napari-inrst: error: 'evaluate' is not yet available in this version", file=sys.stderr)
    return 2
