"""Coordinate encodings (torch modules; import this module only where torch is wanted).

* :class:`FourierEncoding` — the paper's positional encoding (INRScrecon eq. 2–3): a bank of
  sin/cos of each coordinate at a set of frequencies, here log-spaced per axis between the extent
  of the data and a finest wavelength chosen separately for x/y and for z (z is sampled far more
  sparsely). A coarse-to-fine window (``alpha``) opens the frequencies progressively during
  training, so validation can stop training at the scale that generalizes.
* :class:`HashGridEncoding` — a multiresolution hash grid (Instant-NGP style) in pure, vectorized
  PyTorch, with per-axis cell sizes (coarse z cells for sparse sections).

Both take points in µm (stack frame) and know their own centre/extent (buffers saved with the
model), so callers never normalize coordinates themselves.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def _geom(lo: float, hi: float, n: int) -> np.ndarray:
    if n <= 1:
        return np.array([hi], dtype=np.float64)
    return np.geomspace(lo, hi, n)


class FourierEncoding(nn.Module):
    """sin/cos(2π f x) for per-axis log-spaced frequencies, plus the scaled coordinates."""

    def __init__(self, center, extent, n_freq=(16, 16, 4), min_wavelength=(50.0, 50.0, 125.0)):
        super().__init__()
        center = np.asarray(center, dtype=np.float64)
        extent = np.maximum(np.asarray(extent, dtype=np.float64), 1e-6)
        freqs, axes = [], []
        for a in range(3):
            n = int(n_freq[a])
            if n <= 0:
                continue
            lam = float(min_wavelength[a])
            f_lo = 1.0 / (2.0 * max(extent[a], lam))  # half a period over the data
            f_hi = 1.0 / lam
            f = _geom(min(f_lo, f_hi), f_hi, n)
            freqs.append(f)
            axes.append(np.full(n, a))
        f = np.concatenate(freqs) if freqs else np.zeros(0)
        ax = np.concatenate(axes) if axes else np.zeros(0, dtype=int)
        # rank of each frequency within its axis in [0, 1] (for the coarse-to-fine window)
        rank = np.concatenate([np.linspace(0, 1, len(fr)) if len(fr) > 1 else np.ones(1) for fr in freqs]) \
            if freqs else np.zeros(0)
        B = np.zeros((3, len(f)))
        B[ax, np.arange(len(f))] = 2 * np.pi * f
        self.register_buffer("center", torch.tensor(center, dtype=torch.float32))
        self.register_buffer("halfext", torch.tensor(np.maximum(extent / 2, 1e-6), dtype=torch.float32))
        self.register_buffer("B", torch.tensor(B, dtype=torch.float32))
        self.register_buffer("rank", torch.tensor(rank, dtype=torch.float32))
        self.register_buffer("alpha", torch.tensor(1.0))
        self.n_out = 3 + 2 * len(f)

    def window(self) -> torch.Tensor:
        """Per-frequency weights in [0, 1]: frequencies whose rank is below ``alpha`` are open."""
        # smooth ramp of width 0.25 in rank units (Nerfies-style cosine easing); every weight is 1
        # once alpha ≥ 1 (rank ≤ 1). No branch on alpha's value: torch.compile keeps one graph.
        t = torch.clamp((self.alpha * 1.25 - self.rank) / 0.25, 0.0, 1.0)
        return 0.5 * (1 - torch.cos(math.pi * t))

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        c = xyz - self.center
        proj = c @ self.B
        w = self.window()
        return torch.cat([c / self.halfext, torch.sin(proj) * w, torch.cos(proj) * w], dim=-1)


_PRIMES = (1, 2654435761, 805459861)


class HashGridEncoding(nn.Module):
    """Multiresolution hash encoding with per-axis cell sizes (trilinear interpolation).

    Level ``l`` has cells ``coarse_a · (fine_a / coarse_a)^(l / (L-1))`` µm along axis ``a``;
    levels whose grid fits in the table are indexed densely, the others by a spatial hash.
    """

    def __init__(self, lo, hi, coarse_um=(500.0, 500.0, 200.0), fine_um=(20.0, 20.0, 50.0),
                 levels: int = 12, features: int = 2, log2_table: int = 15, seed: int = 0):
        super().__init__()
        lo = np.asarray(lo, dtype=np.float64)
        hi = np.asarray(hi, dtype=np.float64)
        self.levels, self.features = int(levels), int(features)
        T = 2 ** int(log2_table)
        cells, res, dense, sizes = [], [], [], []
        for lv in range(self.levels):
            t = lv / max(self.levels - 1, 1)
            cell = np.array([coarse_um[a] * (fine_um[a] / coarse_um[a]) ** t for a in range(3)])
            n = np.floor((hi - lo) / cell).astype(np.int64) + 2  # nodes per axis
            cells.append(cell)
            res.append(n)
            total = int(np.prod(n))
            dense.append(total <= T)
            sizes.append(min(total, T))
        self.register_buffer("lo", torch.tensor(lo, dtype=torch.float32))
        self.register_buffer("cells", torch.tensor(np.array(cells), dtype=torch.float32))
        self.register_buffer("res", torch.tensor(np.array(res), dtype=torch.int64))
        self.dense = dense
        self.sizes = sizes
        offs = np.concatenate([[0], np.cumsum(sizes)])
        self.offsets = [int(o) for o in offs]
        g = torch.Generator().manual_seed(seed)
        self.table = nn.Parameter((torch.rand(int(offs[-1]), self.features, generator=g) * 2 - 1) * 1e-4)
        corners = torch.tensor([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=torch.int64)
        self.register_buffer("corners", corners)
        self.n_out = self.levels * self.features

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        outs = []
        for lv in range(self.levels):
            u = (xyz - self.lo) / self.cells[lv]
            n = self.res[lv]
            u = torch.minimum(torch.clamp(u, min=0.0), (n - 1).to(u.dtype) - 1e-4)
            base = torch.floor(u)
            frac = u - base
            idx = base.to(torch.int64)[:, None, :] + self.corners[None]  # (m, 8, 3)
            if self.dense[lv]:
                h = (idx[..., 0] * n[1] + idx[..., 1]) * n[2] + idx[..., 2]
            else:
                h = (idx[..., 0] * _PRIMES[0]) ^ (idx[..., 1] * _PRIMES[1]) ^ (idx[..., 2] * _PRIMES[2])
                h = torch.remainder(h, self.sizes[lv])
            feats = self.table[h + self.offsets[lv]]  # (m, 8, F)
            cw = self.corners.to(frac.dtype)
            w = torch.prod(frac[:, None, :] * cw + (1 - frac[:, None, :]) * (1 - cw), dim=-1)  # (m, 8)
            outs.append((feats * w[..., None]).sum(1))
        return torch.cat(outs, dim=-1)
