"""Fourier features — the paper's positional encoding (INRScrecon eq. 2–3).

sin/cos of each coordinate at frequencies log-spaced per axis between the extent of the data
and a finest wavelength chosen separately for x/y and for z (z is sampled far more sparsely),
plus the scaled coordinates. A coarse-to-fine window (``alpha``) opens the frequencies
progressively during training, so validation can stop training at the scale that generalizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .base import Encoding, Geometry, check_positive_int, check_positive_um, resolved


def _geom(lo: float, hi: float, n: int) -> np.ndarray:
    if n <= 1:
        return np.array([hi], dtype=np.float64)
    return np.geomspace(lo, hi, n)


@dataclass
class Fourier(Encoding):
    name = "fourier"

    n_freq_xy: int = 16  # frequencies per x/y axis (log-spaced)
    n_freq_z: int = 4  # frequencies along z (none for one section)
    # finest wavelengths; None → relative to the data's own spacings (unit-free), below
    min_wavelength_xy_um: float | None = None
    min_wavelength_z_um: float | None = None
    xy_wavelength_spacings: float = 2.0  # finest x/y wavelength by default: × the spot spacing
    # finest z wavelength by default: × the section spacing (Nyquist: 2 × the spacing is the finest
    # z pattern sections can show); the spot spacing for one section
    z_wavelength_spacings: float = 2.5
    center: tuple | None = resolved()
    extent: tuple | None = resolved()
    n_freq: tuple | None = resolved()  # (x, y, z)
    min_wavelength: tuple | None = resolved()  # (x, y, z) µm

    def resolve(self, g: Geometry) -> "Fourier":
        lo, hi = np.asarray(g.lo, dtype=np.float64), np.asarray(g.hi, dtype=np.float64)
        wl_xy = float(self.min_wavelength_xy_um or self.xy_wavelength_spacings * g.spacing)
        wl_z = float(self.min_wavelength_z_um or g.finest_z_um(self.z_wavelength_spacings))
        n_fz = self.n_freq_z if g.z_spacing is not None else 0
        return Fourier(self.n_freq_xy, self.n_freq_z, wl_xy, wl_z, self.xy_wavelength_spacings,
                       self.z_wavelength_spacings, center=tuple(((lo + hi) / 2).tolist()),
                       extent=tuple((hi - lo).tolist()), n_freq=(self.n_freq_xy, self.n_freq_xy, n_fz),
                       min_wavelength=(wl_xy, wl_xy, wl_z))

    def out_dim(self) -> int:
        return 3 + 2 * int(sum(int(n) for n in self.n_freq if int(n) > 0))

    def detail_um(self):
        wl, nf = self.min_wavelength, self.n_freq
        return float(min(wl[0], wl[1])), (float(wl[2]) if nf[2] > 0 else math.inf)

    def validate(self):
        check_positive_int("fourier", "n_freq_xy", self.n_freq_xy, 0, 4096)
        check_positive_int("fourier", "n_freq_z", self.n_freq_z, 0, 4096)
        for k in ("min_wavelength_xy_um", "min_wavelength_z_um", "xy_wavelength_spacings", "z_wavelength_spacings"):
            check_positive_um("fourier", k, getattr(self, k))
        return self

    def check_resolved(self, bad):
        super().check_resolved(bad)
        nf, wl = np.asarray(self.n_freq, dtype=np.float64), np.asarray(self.min_wavelength, dtype=np.float64)
        if len(self.center) != 3 or len(self.extent) != 3 or nf.shape != (3,) or wl.shape != (3,):
            bad("'center', 'extent', 'n_freq' and 'min_wavelength' hold 3 numbers each")
        if (nf < 0).any() or (nf > 4096).any() or (nf != np.round(nf)).any():
            bad("'n_freq' must be whole numbers in 0…4096")
        if (wl <= 0).any() or (np.asarray(self.extent) < 0).any():
            bad("'min_wavelength' must be positive and 'extent' not negative")

    # --- torch ----------------------------------------------------------------------------
    def init(self, m, seed: int):
        center = np.asarray(self.center, dtype=np.float64)
        extent = np.maximum(np.asarray(self.extent, dtype=np.float64), 1e-6)
        freqs, axes = [], []
        for a in range(3):
            n = int(self.n_freq[a])
            if n <= 0:
                continue
            lam = float(self.min_wavelength[a])
            f_lo = 1.0 / (2.0 * max(extent[a], lam))  # half a period over the data
            f_hi = 1.0 / lam
            freqs.append(_geom(min(f_lo, f_hi), f_hi, n))
            axes.append(np.full(n, a))
        f = np.concatenate(freqs) if freqs else np.zeros(0)
        ax = np.concatenate(axes) if axes else np.zeros(0, dtype=int)
        # rank of each frequency within its axis in [0, 1] (for the coarse-to-fine window)
        rank = np.concatenate([np.linspace(0, 1, len(fr)) if len(fr) > 1 else np.ones(1) for fr in freqs]) \
            if freqs else np.zeros(0)
        B = np.zeros((3, len(f)))
        B[ax, np.arange(len(f))] = 2 * np.pi * f
        register_features(m, center, extent, B, rank)

    def forward(self, m, xyz):
        return features(m, xyz)

    def anneal(self, m, progress: float):
        m.alpha.fill_(progress)


# --- shared by the Fourier-feature encodings (this one and rff.py) ---------------------------
def register_features(m, center, extent, B, rank):
    """The buffers of a Fourier-feature encoding on module ``m``: the data's centre and half extent
    (the linear part), the angular frequencies ``B`` (3 × n), each frequency's rank in [0, 1] for
    the coarse-to-fine window, and the window's position ``alpha``."""
    import torch

    m.register_buffer("center", torch.tensor(np.asarray(center, dtype=np.float64), dtype=torch.float32))
    m.register_buffer("halfext", torch.tensor(np.maximum(np.asarray(extent) / 2, 1e-6), dtype=torch.float32))
    m.register_buffer("B", torch.tensor(B, dtype=torch.float32))
    m.register_buffer("rank", torch.tensor(rank, dtype=torch.float32))
    m.register_buffer("alpha", torch.tensor(1.0))


def features(m, xyz):
    """[(x − centre) / half extent, sin(xB)·w, cos(xB)·w]: per-frequency weights w in [0, 1] open
    the frequencies whose rank is below alpha, with a smooth ramp of width 0.25 in rank units
    (Nerfies-style cosine easing), every weight 1 once alpha ≥ 1. No branch on alpha's value:
    torch.compile keeps one graph."""
    import torch

    c = xyz - m.center
    proj = c @ m.B
    t = torch.clamp((m.alpha * 1.25 - m.rank) / 0.25, 0.0, 1.0)
    w = 0.5 * (1 - torch.cos(math.pi * t))
    return torch.cat([c / m.halfext, torch.sin(proj) * w, torch.cos(proj) * w], dim=-1)
