"""``napari-inrst render``."""

from __future__ import annotations

import sys

HELP = "render (not yet available in this version)"


def add_parser(sub):
    p = sub.add_parser("render", help=HELP, description=HELP)
    return p


def run(args) -> int:
    print("napari-inrst: error: 'render' is not yet available in this version", file=sys.stderr)
    return 2
