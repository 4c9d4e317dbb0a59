"""The training loss (paper eq. 7 + occupancy) and the optimizer, against known values."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_inrst.field import FieldConfig  # noqa: E402
from napari_inrst.field.losses import FeatureExtractor, Objective, kl_loss, pretrain_extractor, rc_loss, rmse  # noqa: E402
from napari_inrst.field.optim import AdamW  # noqa: E402


def test_rmse_and_kl_match_their_formulas():
    a = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 4.0]])
    b = torch.tensor([[1.0, 0.0, 3.0], [0.0, 2.0, 4.0]])
    assert float(rmse(a, b)) == pytest.approx(math.sqrt(8 / 6), rel=1e-6)
    assert float(kl_loss(a, a)) == pytest.approx(0.0, abs=1e-6)
    p = (a.numpy() + 1e-6) / (a.numpy() + 1e-6).sum(1, keepdims=True)
    q = (b.numpy() + 1e-6) / (b.numpy() + 1e-6).sum(1, keepdims=True)
    assert float(kl_loss(a, b)) == pytest.approx(np.mean(np.sum(p * np.log(p / q), 1)), rel=1e-4)
    assert float(kl_loss(-a, a)) > 0  # negative predictions count as zero expression


def test_consistency_extractor_is_pretrained_then_frozen():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(300, 40, generator=g)
    H = pretrain_extractor(FeatureExtractor(40, dim=8), X, steps=20, batch=64, generator=g)
    assert not any(p.requires_grad for p in H.parameters())
    assert float(rc_loss(H, X[:10], X[:10])) == 0.0 and float(rc_loss(H, X[:10], X[10:20])) > 0


def _tensors(T, resid=None, basis=None):
    g = basis.shape[0] if basis is not None else T.shape[1]
    return SimpleNamespace(projected=basis is not None, T=T, resid=resid, basis=basis, mean=torch.zeros(g),
                           std=torch.ones(g), occ_lab=torch.tensor([1.0, 0.0, 1.0, 0.0]))


def test_projected_targets_give_the_dense_loss_exactly():
    """With the decoder fixed to an orthonormal basis V, the gene-space error equals the latent
    error plus each cell's residual energy: the projected loss is the dense loss."""
    rng = np.random.default_rng(0)
    n, g, r = 64, 10, 4
    X = torch.tensor(rng.normal(size=(n, g)), dtype=torch.float32)
    V = torch.linalg.qr(torch.tensor(rng.normal(size=(g, r)), dtype=torch.float32))[0]
    coef = X @ V
    resid = ((X - coef @ V.T) ** 2).sum(1)
    lat = torch.tensor(rng.normal(size=(n, r)), dtype=torch.float32)
    cfg = FieldConfig(lambda_kl=0.0, lambda_occ=0.0)
    rows = torch.arange(n)
    dense = Objective(cfg, _tensors(X), g)
    proj = Objective(cfg, _tensors(coef, resid, V), g)
    ld, _ = dense(lat, lat @ V.T, rows, None, None)
    lp, _ = proj(lat, None, rows, None, None)
    assert float(lp) == pytest.approx(float(ld), rel=1e-5)
    assert float(proj.sq_err(lat, None, rows)) == pytest.approx(float(dense.sq_err(lat, lat @ V.T, rows)), rel=1e-5)


def test_each_term_is_weighted_and_switchable():
    X = torch.tensor([[1.0, 2.0], [3.0, 0.5]])
    pred = X + 0.5
    occ = torch.tensor([2.0, -1.0])
    oi = torch.tensor([0, 1])
    rows = torch.arange(2)
    loss, parts = Objective(FieldConfig(lambda_kl=0.0, lambda_occ=0.0), _tensors(X), 2)(X, pred, rows, occ, oi)
    assert set(parts) == {"rec"} and float(loss) == pytest.approx(0.5, rel=1e-5)
    cfg = FieldConfig(lambda_kl=0.5, lambda_occ=0.3)
    loss, parts = Objective(cfg, _tensors(X), 2)(X, pred, rows, occ, oi)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(occ, torch.tensor([1.0, 0.0]))
    assert set(parts) == {"rec", "kl", "occ"} and float(parts["occ"]) == pytest.approx(float(bce))
    assert float(loss) == pytest.approx(float(parts["rec"] + 0.5 * parts["kl"] + 0.3 * parts["occ"]), rel=1e-6)


def test_adamw_follows_the_adamw_update_rule():
    """Decoupled weight decay, bias-corrected moments (Loshchilov & Hutter), checked against the
    rule written out in numpy."""
    rng = np.random.default_rng(0)
    w0, grads = rng.normal(size=(5, 3)), rng.normal(size=(4, 5, 3))
    lr, wd, b1, b2, eps = 1e-2, 1e-2, 0.9, 0.999, 1e-8
    w = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    opt = AdamW([w], lr=lr, weight_decay=wd)
    ref, m, v = w0.copy(), np.zeros_like(w0), np.zeros_like(w0)
    for t, g in enumerate(grads, start=1):
        w.grad = torch.tensor(g)
        opt.step()
        ref *= 1 - lr * wd
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        ref -= lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    np.testing.assert_allclose(w.detach().numpy(), ref, rtol=1e-10, atol=1e-12)
    w2 = torch.tensor(w0, requires_grad=True)
    again = AdamW([w2], lr=lr)
    again.load_state_dict(opt.state_dict())
    assert again.t == 4 and torch.equal(again.m[0], opt.m[0])
