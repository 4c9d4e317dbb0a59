"""Smooth per-section deformations (issue 14): the B-spline grid, its fits, storage and ``map``."""

import json

import numpy as np
import pytest

from napari_inrst.align.deform import Deformation, bending, deformations_json
from napari_inrst.align.mapping import map_points
from napari_inrst.align.nonrigid import solve_grid
from napari_inrst.errors import InputError

W = 1000.0  # section width (µm)


def _section_xy(n=600, seed=0):
    return np.random.default_rng(seed).uniform(0, W, (n, 2))


def _warp(xy, amp=30.0):
    """A smooth known warp (amplitude ``amp`` µm, one period across the section)."""
    u = xy / W
    return np.column_stack([amp * np.sin(2 * np.pi * u[:, 1] + 0.3), amp * np.cos(2 * np.pi * u[:, 0] + 1.1)])


def test_zero_grid_is_the_identity_and_bound_holds_everywhere():
    xy = _section_xy()
    d = Deformation.for_points(xy)
    assert d.is_identity() and np.array_equal(d.apply(xy), xy)
    assert d.max_disp_um == pytest.approx(0.08 * np.ptp(xy, axis=0).max())
    rng = np.random.default_rng(1)
    d.coef = d.max_disp_um * np.tanh(5 * rng.normal(size=d.coef.shape))  # as optimizers write it
    far = np.concatenate([xy, rng.uniform(-2 * W, 3 * W, (500, 2))])  # inside and far outside the box
    disp = d.displacement(far)
    assert np.abs(disp).max() <= d.max_disp_um + 1e-9
    d.enabled = False  # switched off: the identity again
    assert np.array_equal(d.apply(xy), xy)


def test_bending_is_zero_for_affine_and_grows_with_curvature():
    d = Deformation.for_points(_section_xy())
    nx, ny = d.shape
    i, j = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    d.coef = np.stack([0.5 * i - 0.2 * j + 3, 0.1 * i + 0.4 * j], axis=-1) * 10
    assert d.bending() == pytest.approx(0.0, abs=1e-12)
    # B-splines reproduce an affine displacement exactly: d(x) is affine in x
    pts = _section_xy(50, seed=2)
    disp = d.displacement(pts)
    A = np.column_stack([pts, np.ones(len(pts))])
    coef, *_ = np.linalg.lstsq(A, disp, rcond=None)
    assert np.abs(A @ coef - disp).max() < 1e-8
    bump = np.zeros_like(d.coef)
    bump[3, 3] = 5.0
    assert bending(bump) > 0 and bending(2 * bump) == pytest.approx(4 * bending(bump))


def test_json_round_trip_and_bad_files():
    xy = _section_xy()
    d = solve_grid(Deformation.for_points(xy), xy, _warp(xy), np.ones(len(xy)), bend=1e-3)
    text = json.dumps(deformations_json(["a", "b"], [None, d]))
    meta = {"names": ["a", "b"], "z": [0.0, 10.0], "transforms": [np.eye(3).tolist()] * 2,
            "deformation": json.loads(text)}
    from napari_inrst.align.deform import deformations_from_meta

    back = deformations_from_meta(meta, "m.inrst")
    assert back[0] is None and np.array_equal(back[1].coef, d.coef)
    assert np.array_equal(back[1].displacement(xy), d.displacement(xy))
    bad = json.loads(text)
    bad["sections"][1]["coef"][0][0][0] = 10 * d.max_disp_um  # beyond the bound
    with pytest.raises(InputError, match="exceed max_disp_um") as e:
        deformations_from_meta(dict(meta, deformation=bad), "m.inrst")
    assert "m.inrst" in str(e.value)
    bad["sections"][1]["coef"] = [[1.0]]
    with pytest.raises(InputError, match="coef has shape"):
        deformations_from_meta(dict(meta, deformation=bad), "m.inrst")


def test_map_applies_the_deformation_before_the_transform_against_known_truth():
    """Observed (warped, then moved) coordinates of a section; the grid fitted to the known warp's
    inverse; ``map`` must give the true stack-frame positions (within the grid's resolution)."""
    from napari_inrst.align.kabsch import rigid_matrix

    true_in = _section_xy(800)
    observed = true_in + _warp(true_in)  # the section as cut: warped in its own frame
    M = rigid_matrix(17.0, (120.0, -40.0), center=(500.0, 500.0))
    truth = true_in @ M[:2, :2].T + M[:2, 2]
    d = solve_grid(Deformation.for_points(observed), observed, true_in - observed, np.ones(len(observed)), bend=1e-3)
    meta = {"names": ["ref", "s1"], "z": [0.0, 20.0], "transforms": [np.eye(3).tolist(), M.tolist()],
            "unit_factor": 1000.0, "deformation": deformations_json(["ref", "s1"], [None, d])}
    out = map_points(meta, "s1", observed / 1000.0)  # the file holds mm
    err = np.linalg.norm(out[:, :2] - truth, axis=1)
    assert err.mean() < 2.5 and np.all(out[:, 2] == 20.0)  # µm, a 30 µm warp (grid of 4 × 4 cells)
    rigid_only = np.linalg.norm(observed @ M[:2, :2].T + M[:2, 2] - truth, axis=1).mean()
    assert rigid_only > 15
    meta["deformation"]["sections"][1]["enabled"] = False  # switched off: the rigid part alone
    off = map_points(meta, 1, observed / 1000.0)
    assert np.allclose(off[:, :2], observed @ M[:2, :2].T + M[:2, 2])


def test_field_driven_grid_fit_undoes_a_known_warp():
    """A frozen analytic field; a section whose input coordinates are warped: optimizing its grid
    through the field moves its cells back towards their true positions."""
    torch = pytest.importorskip("torch")
    from napari_inrst.field.warp import deform_sections
    from napari_inrst.stack import build_stack

    class Net(torch.nn.Module):  # expression = smooth functions of x, y (periods ~ the section)
        def __init__(self):
            super().__init__()
            self.k = torch.tensor([[1.0, 0.3], [-0.4, 1.0], [0.7, 0.7], [1.2, -0.5]]) * (2 * np.pi / 700)
            self.decoder = torch.nn.Identity()

        def latent(self, xyz):
            ph = xyz[:, :2] @ self.k.T
            return torch.cat([torch.sin(ph), torch.cos(ph)], dim=1)

    class Model:
        net, device, origin = Net(), torch.device("cpu"), np.zeros(3)
        mean, std = np.zeros(8, np.float32), np.ones(8, np.float32)

    import anndata as ad

    true_in = _section_xy(900, seed=4)
    observed = true_in + _warp(true_in, amp=25.0)
    X = Model.net.latent(torch.as_tensor(np.column_stack([true_in, np.zeros(len(true_in))]),
                                         dtype=torch.float32)).numpy()
    a = ad.AnnData(X=X.astype(np.float32))
    a.obsm["spatial"] = observed
    a.var_names = [f"g{i}" for i in range(8)]
    stack = build_stack([a], [0.0], names=["s"], normalize="none")
    grids, before, after = deform_sections(Model(), stack, [0], steps=150, lr=0.1, smooth=0.001)
    assert after[0] < before[0]
    err0 = np.linalg.norm(observed - true_in, axis=1).mean()
    err1 = np.linalg.norm(grids[0].apply(observed) - true_in, axis=1).mean()
    assert err1 < 0.4 * err0, (err0, err1)
