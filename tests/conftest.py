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


def combined_h5ad(tmp_path, make_section, z=(3.0, 1.0)) -> Path:
    """Two sections in one .h5ad (``all.h5ad``): obs['slice'] = s1 / s2, obs['zz'] = ``z``."""
    import anndata as ad
    import numpy as np

    a, b = make_section(seed=1), make_section(seed=2)
    b.obs_names = [f"d{i}" for i in range(b.n_obs)]
    a.obs["slice"], b.obs["slice"] = "s1", "s2"
    a.obs["zz"], b.obs["zz"] = z
    both = ad.concat([a, b])
    both.obsm["spatial"] = np.concatenate([a.obsm["spatial"], b.obsm["spatial"]])
    path = tmp_path / "all.h5ad"
    both.write_h5ad(path)
    return path


def counting_field(tissue, genes):
    """The analytic truth field (:class:`~napari_inrst.field.TruthField`), counting the
    points its trunk (``latent``) evaluates in ``latent_points``."""
    from napari_inrst.field import TruthField

    class CountingField(TruthField):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.latent_points = 0

        def latent(self, xyz):
            self.latent_points += len(xyz)
            return super().latent(xyz)

    return CountingField(tissue, genes)
