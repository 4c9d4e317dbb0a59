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

import torch
from torch import nn

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


class AdamW:
    """A small AdamW (decoupled weight decay) in plain tensor ops.

    ``torch.optim`` imports ``torch._dynamo`` (and sympy) on the first ``step()``: seconds of
    imports holding the GIL, which froze napari's UI while training started in a worker thread.
    This one has no such import; ``state_dict()`` holds tensors and numbers only.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.params = [p for p in params if p.requires_grad]
        self.param_groups = [{"lr": lr}]
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay
        self.t = 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self, set_to_none: bool = True):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        self.t += 1
        lr = self.param_groups[0]["lr"]
        b1, b2 = self.betas
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            g = p.grad
            if self.weight_decay:
                p.mul_(1 - lr * self.weight_decay)
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.addcdiv_(m, (v / c2).sqrt_().add_(self.eps), value=-lr / c1)

    def state_dict(self) -> dict:
        return {"t": self.t, "m": [x.detach().cpu() for x in self.m], "v": [x.detach().cpu() for x in self.v]}

    def load_state_dict(self, state: dict):
        self.t = int(state["t"])
        for dst, src in zip(self.m, state["m"]):
            dst.copy_(src)
        for dst, src in zip(self.v, state["v"]):
            dst.copy_(src)
