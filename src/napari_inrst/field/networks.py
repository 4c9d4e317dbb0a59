"""The torch networks a :class:`~.spec.ModelConfig` describes (imports torch: only for training,
building and loading models).

:class:`FieldNet`: encoding → trunk MLP → low-rank latent (r) → linear gene decoder (initialised
from PCA of the training data, :func:`pca_init_decoder`), plus a tissue-occupancy head on the
encoding. :class:`EnsembleNet`: K field networks averaged, still one linear decoder.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class EncodingLayer(nn.Module):
    """The module of an :class:`~.encodings.base.Encoding`: holds its tensors, runs its forward."""

    def __init__(self, encoding, seed: int = 0):
        super().__init__()
        self.encoding = encoding
        encoding.init(self, int(seed))
        self.n_out = encoding.out_dim()

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        return self.encoding.forward(self, xyz)

    def anneal(self, progress: float):
        """Coarse-to-fine: ``progress`` in [0, 1] of the annealing schedule (1: fully open)."""
        self.encoding.anneal(self, progress)


class FieldNet(nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.enc = EncodingLayer(spec.encoding, spec.seed)
        layers, d = [], self.enc.n_out
        for _ in range(int(spec.depth)):
            layers += [nn.Linear(d, int(spec.width)), nn.SiLU()]
            d = int(spec.width)
        self.trunk = nn.Sequential(*layers)
        self.to_latent = nn.Linear(d, int(spec.rank))
        self.decoder = nn.Linear(int(spec.rank), int(spec.n_genes))
        h = int(spec.occupancy_width)
        self.occ = nn.Sequential(nn.Linear(self.enc.n_out, h), nn.SiLU(), nn.Linear(h, 1))

    def latent(self, xyz):
        return self.to_latent(self.trunk(self.enc(xyz)))

    def forward(self, xyz, occ_xyz=None, decode: bool = True):
        """→ (latent, expression in target space (centred, ÷ std) or None, occupancy logit at
        ``occ_xyz`` or else at ``xyz``). One call covers every output a training step needs (what
        DistributedDataParallel wraps); ``decode=False`` skips the genes (projected targets)."""
        e = self.enc(xyz)
        lat = self.to_latent(self.trunk(e))
        occ = self.occ(e if occ_xyz is None else self.enc(occ_xyz)).squeeze(-1)
        return lat, (self.decoder(lat) if decode else None), occ

    def occupancy_logit(self, xyz):
        return self.occ(self.enc(xyz)).squeeze(-1)

    def anneal(self, progress: float):
        self.enc.anneal(progress)


class EnsembleNet(nn.Module):
    """K fields averaged: latent = the members' latents side by side, decoder = their decoders / K
    (so it is still one linear decoder), occupancy = mean logit."""

    def __init__(self, spec, k: int):
        super().__init__()
        self.members = nn.ModuleList([FieldNet(spec) for _ in range(k)])
        self.decoder = nn.Linear(k * int(spec.rank), int(spec.n_genes))

    def combine(self):
        """Set the joint decoder from the members' decoders (after training)."""
        k = len(self.members)
        with torch.no_grad():
            self.decoder.weight.copy_(torch.cat([m.decoder.weight for m in self.members], dim=1) / k)
            self.decoder.bias.copy_(torch.stack([m.decoder.bias for m in self.members]).mean(0))
        return self

    def latent(self, xyz):
        return torch.cat([m.latent(xyz) for m in self.members], dim=-1)

    def forward(self, xyz, occ_xyz=None, decode: bool = True):
        lat = self.latent(xyz)
        occ = self.occupancy_logit(xyz if occ_xyz is None else occ_xyz)
        return lat, (self.decoder(lat) if decode else None), occ

    def occupancy_logit(self, xyz):
        return torch.stack([m.occupancy_logit(xyz) for m in self.members]).mean(0)

    def anneal(self, progress: float):
        for m in self.members:
            m.anneal(progress)


def build_network(spec):
    """The network ``spec`` (a :class:`~.spec.ModelConfig`) describes, seeded by ``spec.seed``."""
    torch.manual_seed(int(spec.seed))
    k = int(spec.members)
    return EnsembleNet(spec, k) if k > 1 else FieldNet(spec)


def ensemble_of(spec, nets):
    """One :class:`EnsembleNet` from trained member networks (their weights copied)."""
    net = build_network(spec.replace(members=len(nets)))
    for m, n in zip(net.members, nets):
        m.load_state_dict(n.state_dict())
    return net.combine()


def pca_init_decoder(net, Xs: np.ndarray, rank: int, seed: int):
    """Decoder ← the top principal axes of the training profiles (scaled so the latent starts at
    unit variance), bias ← the mean profile. Randomized subspace iteration on (a subsample of)
    the centred data (:func:`~napari_inrst.stack.linalg.top_components`): never the genes × genes
    covariance, so thousands of genes cost seconds, not minutes."""
    from ..stack.linalg import top_components

    rng = np.random.default_rng(seed)
    sub = Xs if len(Xs) <= 8000 else Xs[rng.choice(len(Xs), 8000, replace=False)]
    sub = np.asarray(sub, dtype=np.float64)
    sub = sub - sub.mean(0)
    r = min(rank, sub.shape[1])
    evals, evecs = top_components(sub, r, rng)
    W = np.zeros((Xs.shape[1], rank), dtype=np.float64)
    W[:, :r] = evecs * np.sqrt(evals)[None, :]
    with torch.no_grad():
        net.decoder.weight.copy_(torch.from_numpy(W).float())
        net.decoder.bias.copy_(torch.tensor(Xs.mean(0), dtype=torch.float32))


def fixed_decoder(net, basis: np.ndarray):
    """Projected targets: decoder ← the orthonormal PCA basis, bias 0, frozen."""
    with torch.no_grad():
        net.decoder.weight.copy_(torch.from_numpy(basis))
        net.decoder.bias.zero_()
    net.decoder.weight.requires_grad_(False)
    net.decoder.bias.requires_grad_(False)
