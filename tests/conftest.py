"""Shared fixtures. Tests on ../shared/data skip with a clear reason where it is absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
BREAST = SHARED / "breast_st"
MERFISH = SHARED / "merfish_hypothalamus"

#: breast ST array coordinates → µm (ST spots: 100 µm wide, 200 µm centre to centre)
BREAST_UNIT = 200.0


def _need(path: Path):
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (CI has ../shared beside the clone; a user's clone does not)")
    return path


@pytest.fixture(scope="session")
def breast_dir():
    return _need(BREAST)


@pytest.fixture(scope="session")
def merfish_dir():
    return _need(MERFISH)


@pytest.fixture(scope="session")
def sample():
    """The synthetic sample (misplaced sections) and its analytic tissue: (stack, tissue)."""
    from napari_inrst.synthetic.sample import sample_stack

    return sample_stack()


@pytest.fixture()
def make_section():
    """Build a small valid AnnData section; keyword overrides break it on purpose."""

    def _make(n=30, genes=("A", "B", "C", "D"), seed=0, counts=True):
        import anndata as ad
        import pandas as pd

        rng = np.random.default_rng(seed)
        X = rng.poisson(3.0, (n, len(genes))).astype(np.float32)
        if not counts:
            X = X * 0.37
        a = ad.AnnData(X=X, obs=pd.DataFrame(index=[f"c{i}" for i in range(n)]),
                       var=pd.DataFrame(index=list(genes)))
        a.obsm["spatial"] = rng.uniform(0, 500, (n, 2))
        return a

    return _make


# --- shared builders (imported by tests: from ..conftest import fast_fit) ---------------------
def fast_config(seed=0):
    """A small, quick field (seconds on 2 cores) – the real trainer, fewer steps and units."""
    from napari_inrst.field import FieldConfig

    return FieldConfig(steps=150, width=64, depth=2, rank=16, lambda_rc=0.0,
                       lambda_kl=0.0, rc_pretrain_steps=0, batch_size=1024, val_every=50,
                       checkpoint_every=0, ensemble=1, blend=False, seed=seed)


def fast_fit(stack, sections, seed=0):
    from napari_inrst.evaluate.fitting import inr_fit_fn

    return inr_fit_fn(fast_config(seed))(stack, sections)
