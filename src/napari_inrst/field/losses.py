"""Training losses (INRScrecon eq. 7): L = RMSE + λ1 · representation consistency + λ2 · KL.

* :func:`rmse` — reconstruction (§3.2.1, eq. 4).
* :class:`FeatureExtractor` — H of §3.2.2: a small 1D CNN over the gene vector followed by a
  two-layer MLP, the same weights for the true and the predicted profile. The paper does not say
  how H is trained; training it jointly with the field would let it collapse to a constant (which
  makes the loss vanish). Here it is pretrained briefly as an autoencoder on the training profiles
  (:func:`pretrain_extractor`) and then frozen, so the loss compares profiles in a learned,
  fixed representation of co-expression.
* :func:`kl_loss` — KL(Ĝ ‖ G) between predicted and true profiles normalized to sum 1 over genes
  (§3.2.3, eq. 6), with a small ε.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .optim import AdamW

EPS = 1e-6


def rmse(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(torch.mean((pred - true) ** 2) + 1e-12)


class FeatureExtractor(nn.Module):
    """H: gene vector (b, G) → (b, d): a 1D CNN over the gene axis (two strided convolutions,
    kernel 9, stride 4, 8 channels) followed by a two-layer MLP."""

    def __init__(self, n_genes: int, dim: int = 32, channels: int = 8, hidden: int = 64):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(1, channels, 9, stride=4, padding=4), nn.SiLU(),
                                  nn.Conv1d(channels, channels, 9, stride=4, padding=4), nn.SiLU())
        with torch.no_grad():
            n_flat = self.conv(torch.zeros(1, 1, n_genes)).numel()
        self.mlp = nn.Sequential(nn.Linear(n_flat, hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.conv(g[:, None, :]).flatten(1))


def pretrain_extractor(H: FeatureExtractor, X: torch.Tensor, steps: int = 200, batch: int = 512,
                       lr: float = 3e-3, generator: torch.Generator | None = None) -> FeatureExtractor:
    """Fit H as the encoder of an autoencoder (linear decoder) on profiles X, then freeze it."""
    dec = nn.Linear(H.mlp[-1].out_features, X.shape[1]).to(X.device)
    opt = AdamW(list(H.parameters()) + list(dec.parameters()), lr=lr)
    n = X.shape[0]
    for _ in range(int(steps)):
        idx = torch.randint(0, n, (min(batch, n),), generator=generator).to(X.device)
        xb = X[idx]
        loss = torch.mean((dec(H(xb)) - xb) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for p in H.parameters():
        p.requires_grad_(False)
    return H.eval()


def rc_loss(H: FeatureExtractor, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ‖H(Ĝ_i) − H(G_i)‖² (the same, frozen H on both)."""
    with torch.no_grad():
        ht = H(true)
    return torch.mean(torch.sum((H(pred) - ht) ** 2, dim=1))


def kl_loss(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of KL(p̂ ‖ p), profiles made non-negative and normalized over genes."""
    p = torch.clamp(pred, min=0.0) + EPS
    q = torch.clamp(true, min=0.0) + EPS
    p = p / p.sum(dim=1, keepdim=True)
    q = q / q.sum(dim=1, keepdim=True)
    return torch.mean(torch.sum(p * (torch.log(p) - torch.log(q)), dim=1))


class Objective:
    """The training loss of one run (paper eq. 7 + occupancy) over data resident on the device.

    ``tensors`` (:class:`~.trainer.DeviceData`): targets ``T`` (dense: n × genes; projected: n × r
    with ``basis`` and per-cell residual energy ``resid``), ``mean``/``std``, occupancy labels.
    ``H``: the frozen feature extractor of the consistency term (None: off).
    """

    def __init__(self, cfg, tensors, n_genes: int, H: FeatureExtractor | None = None):
        self.cfg, self.d, self.n_genes, self.H = cfg, tensors, int(n_genes), H

    def sq_err(self, lat, pred, rows) -> torch.Tensor:
        """Sum over ``rows`` of the squared error over all genes (target space: centred, ÷ std)."""
        d = self.d
        if d.projected:
            return ((lat.float() - d.T[rows]) ** 2).sum() + d.resid[rows].sum()
        return ((pred.float() - d.T[rows]) ** 2).sum()

    def __call__(self, lat, pred, rows, occ_logit, oi):
        """→ (loss, {term: value}) for a batch: network outputs at training ``rows`` and the
        occupancy logits at occupancy samples ``oi``."""
        cfg, d = self.cfg, self.d
        parts = {}
        k = min(int(cfg.aux_batch), len(rows))  # the consistency and KL terms on the first k (random) rows
        if d.projected:
            lat = lat.float()
            parts["rec"] = torch.sqrt((((lat - d.T[rows]) ** 2).sum(1) + d.resid[rows]).mean() / self.n_genes + 1e-12)
            if self.H is not None or cfg.lambda_kl > 0:  # profiles in the PCA basis, for the auxiliary terms
                true, pred = d.T[rows[:k]] @ d.basis.T, lat[:k] @ d.basis.T
        else:
            pred = pred.float()
            true = d.T[rows]
            parts["rec"] = rmse(pred, true)
            true, pred = true[:k], pred[:k]
        if self.H is not None:
            parts["rc"] = rc_loss(self.H, pred, true)
        if cfg.lambda_kl > 0:
            parts["kl"] = kl_loss(pred * d.std + d.mean, true * d.std + d.mean)
        if cfg.lambda_occ > 0:
            parts["occ"] = torch.nn.functional.binary_cross_entropy_with_logits(occ_logit.float(), d.occ_lab[oi])
        loss = parts["rec"] + cfg.lambda_rc * parts.get("rc", 0.0) + cfg.lambda_kl * parts.get("kl", 0.0) \
            + cfg.lambda_occ * parts.get("occ", 0.0)
        return loss, parts


def consistency_extractor(cfg, tensors, train_rows, n_genes: int, device):
    """H of the consistency term, pretrained on up to 20,000 training profiles and frozen; None
    when the term is off (λ1 = 0)."""
    if cfg.lambda_rc <= 0:
        return None
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 2)
    H = FeatureExtractor(n_genes, cfg.rc_dim).to(device)
    ref_rows = np.random.default_rng(cfg.seed + 3).permutation(train_rows)[:20000]
    ref = tensors.T[torch.from_numpy(np.sort(ref_rows)).to(device)]
    pretrain_extractor(H, ref @ tensors.basis.T if tensors.projected else ref, steps=cfg.rc_pretrain_steps,
                       generator=gen)
    return H
