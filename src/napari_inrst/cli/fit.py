"""``napari-inrst fit``."""

from __future__ import annotations

import sys

HELP = "fit (not yet available in this version)"


def add_parser(sub):
    p = sub.add_parser("fit", help=HELP, description=HELP)
    return p


def run(args) -> int:
    print("napari-inrst: error: 'fit' is not yet available in this version", file=sys.stderr)
    return 2
