"""``napari-inrst info``: what a model file holds and how it scored against interpolation."""

from __future__ import annotations

HELP = "describe a model file: genes, sections, config, validation against interpolation"


def add_parser(sub):
    p = sub.add_parser("info", help=HELP, description=HELP + ".")
    p.add_argument("model", metavar="MODEL", help="model file written by `napari-inrst fit`")
    return p


def run(args) -> int:
    from ..field.model import load_model
    from ..field.report import describe

    model = load_model(args.model)  # bad files: one-line InputError (exit 2)
    print(f"{args.model}: napari-inrst field")
    print(describe(model.meta()))
    return 0
