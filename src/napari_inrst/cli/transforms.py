"""``napari-inrst transforms``."""

from __future__ import annotations

import sys

HELP = "transforms (not yet available in this version)"


def add_parser(sub):
    p = sub.add_parser("transforms", help=HELP, description=HELP)
    return p


def run(args) -> int:
    print("napari-inrst: error: 'transforms' is not yet available in this version", file=sys.stderr)
    return 2
