"""``napari-inrst transforms``: print the per-section transforms stored in a model."""

from __future__ import annotations

import json

HELP = "print the section → stack-frame transforms stored in a model (JSON)"


def add_parser(sub):
    p = sub.add_parser("transforms", help=HELP,
                       description=HELP + ': a list in input order of {"section": name, "matrix": 3×3}.')
    p.add_argument("model", metavar="MODEL", help="model file written by 'napari-inrst fit'")
    return p


def run(args) -> int:
    from ..field.model import load_model

    model = load_model(args.model)
    rows = [json.dumps(t) for t in model.transforms()]
    print("[\n  " + ",\n  ".join(rows) + "\n]" if rows else "[]")
    return 0
