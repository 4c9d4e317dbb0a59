"""``napari-inrst predict``."""

from __future__ import annotations

import sys

HELP = "predict (not yet available in this version)"


def add_parser(sub):
    p = sub.add_parser("predict", help=HELP, description=HELP)
    return p


def run(args) -> int:
    print("napari-inrst: error: 'predict' is not yet available in this version", file=sys.stderr)
    return 2
