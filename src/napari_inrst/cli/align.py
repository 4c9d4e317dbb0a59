"""``napari-inrst align``."""

from __future__ import annotations

import sys

HELP = "align (not yet available in this version)"


def add_parser(sub):
    p = sub.add_parser("align", help=HELP, description=HELP)
    return p


def run(args) -> int:
    print("napari-inrst: error: 'align' is not yet available in this version", file=sys.stderr)
    return 2
