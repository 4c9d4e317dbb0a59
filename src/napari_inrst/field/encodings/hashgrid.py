"""A multiresolution hash grid (Instant-NGP style) in pure, vectorized PyTorch, with per-axis
cell sizes (coarse z cells for sparse sections) and trilinear interpolation.

Level ``l`` has cells ``coarse_a · (fine_a / coarse_a)^(l / (L-1))`` µm along axis ``a``; levels
whose grid fits in the table are indexed densely, the others by a spatial hash.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Encoding, Geometry, check_positive_int, check_positive_um, resolved

_PRIMES = (1, 2654435761, 805459861)


@dataclass
class HashGrid(Encoding):
    name = "hash"

    levels: int = 12
    features: int = 2  # per level
    log2_table: int = 15  # table entries per level: 2 ** log2_table
    finest_um: float | None = None  # finest x/y cell; None → the spot spacing
    finest_z_um: float | None = None  # finest z cell; None → z_cell_spacings × the section spacing
    z_cell_spacings: float = 1.25  # (one section: half the spot spacing)
    lo: tuple | None = resolved()  # the grid's box (the data's + 5 % each side), µm, network frame
    hi: tuple | None = resolved()
    coarse: tuple | None = resolved()  # coarsest cell (x, y, z) µm
    fine: tuple | None = resolved()  # finest cell (x, y, z) µm

    def resolve(self, g: Geometry) -> "HashGrid":
        lo, hi = np.asarray(g.lo, dtype=np.float64), np.asarray(g.hi, dtype=np.float64)
        ext = hi - lo
        sp = float(g.spacing)
        zsp = g.z_spacing or sp
        fz = float(self.finest_z_um or g.finest_z_um(2 * self.z_cell_spacings) / 2)
        fxy = float(self.finest_um or sp)
        return HashGrid(self.levels, self.features, self.log2_table, self.finest_um, self.finest_z_um,
                        self.z_cell_spacings, lo=tuple((lo - 0.05 * ext).tolist()),
                        hi=tuple((hi + 0.05 * ext).tolist()),
                        coarse=(float(max(ext[0], sp) / 2), float(max(ext[1], sp) / 2),
                                float(max(ext[2], zsp) / 2 + zsp)),
                        fine=(fxy, fxy, fz))

    def out_dim(self) -> int:
        return int(self.levels) * int(self.features)

    def detail_um(self):
        return float(min(self.fine[0], self.fine[1])), float(self.fine[2])

    def validate(self):
        check_positive_int("hash", "levels", self.levels, 1, 64)
        check_positive_int("hash", "features", self.features, 1, 64)
        check_positive_int("hash", "log2_table", self.log2_table, 1, 30)
        for k in ("finest_um", "finest_z_um", "z_cell_spacings"):
            check_positive_um("hash", k, getattr(self, k))
        return self

    def check_resolved(self, bad):
        super().check_resolved(bad)
        for k in ("lo", "hi", "coarse", "fine"):
            if len(getattr(self, k)) != 3:
                bad(f"'{k}' must hold 3 numbers")
        if min(self.coarse) <= 0 or min(self.fine) <= 0:
            bad("'coarse' and 'fine' must be positive")

    # --- torch ----------------------------------------------------------------------------
    def init(self, m, seed: int):
        import torch
        from torch import nn

        lo, hi = np.asarray(self.lo, dtype=np.float64), np.asarray(self.hi, dtype=np.float64)
        levels, features = int(self.levels), int(self.features)
        T = 2 ** int(self.log2_table)
        cells, res, dense, sizes = [], [], [], []
        for lv in range(levels):
            t = lv / max(levels - 1, 1)
            cell = np.array([self.coarse[a] * (self.fine[a] / self.coarse[a]) ** t for a in range(3)])
            n = np.floor((hi - lo) / cell).astype(np.int64) + 2  # nodes per axis
            cells.append(cell)
            res.append(n)
            total = int(np.prod(n))
            dense.append(total <= T)
            sizes.append(min(total, T))
        m.register_buffer("lo", torch.tensor(lo, dtype=torch.float32))
        m.register_buffer("cells", torch.tensor(np.array(cells), dtype=torch.float32))
        m.register_buffer("res", torch.tensor(np.array(res), dtype=torch.int64))
        m.dense, m.sizes = dense, sizes
        offs = np.concatenate([[0], np.cumsum(sizes)])
        m.offsets = [int(o) for o in offs]
        g = torch.Generator().manual_seed(seed)
        m.table = nn.Parameter((torch.rand(int(offs[-1]), features, generator=g) * 2 - 1) * 1e-4)
        corners = torch.tensor([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=torch.int64)
        m.register_buffer("corners", corners)

    def forward(self, m, xyz):
        import torch

        outs = []
        for lv in range(int(self.levels)):
            u = (xyz - m.lo) / m.cells[lv]
            n = m.res[lv]
            u = torch.minimum(torch.clamp(u, min=0.0), (n - 1).to(u.dtype) - 1e-4)
            base = torch.floor(u)
            frac = u - base
            idx = base.to(torch.int64)[:, None, :] + m.corners[None]  # (m, 8, 3)
            if m.dense[lv]:
                h = (idx[..., 0] * n[1] + idx[..., 1]) * n[2] + idx[..., 2]
            else:
                h = (idx[..., 0] * _PRIMES[0]) ^ (idx[..., 1] * _PRIMES[1]) ^ (idx[..., 2] * _PRIMES[2])
                h = torch.remainder(h, m.sizes[lv])
            feats = m.table[h + m.offsets[lv]]  # (m, 8, F)
            cw = m.corners.to(frac.dtype)
            w = torch.prod(frac[:, None, :] * cw + (1 - frac[:, None, :]) * (1 - cw), dim=-1)  # (m, 8)
            outs.append((feats * w[..., None]).sum(1))
        return torch.cat(outs, dim=-1)
