"""What the benchmark modules share: where the shared data lie, running a case only when its data
set is there, JSON-safe figures and the ``__main__`` of a single benchmark."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def with_shared(figs: dict, name: str, folder: str, fn, *args, **kwargs):
    """``fn(figs, *args, **kwargs)`` when ``SHARED/folder`` exists, else a 'skipped' figure ``name``."""
    if (SHARED / folder).exists():
        fn(figs, *args, **kwargs)
    else:
        figs[name] = f"skipped: shared data not found at {SHARED}"


def plain(figs: dict) -> dict:
    """numpy floats → Python floats (JSON)."""
    return {k: (float(v) if isinstance(v, np.floating) else v) for k, v in figs.items()}


def main(run):
    """Print ``run(quick)`` as JSON (quick unless ``--full`` is given)."""
    print(json.dumps(run("--full" not in sys.argv), indent=1))
