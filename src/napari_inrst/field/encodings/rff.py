"""Fourier features in well-spread directions (Tancik et al. 2020, "Fourier features let networks
learn high frequency functions": random Fourier features), with :mod:`.fourier`'s scales.

The axis-aligned encoding's features are plane waves along x, y or z only: whatever the network
does not cancel between sections shows as stripes parallel to the axes across the whole tissue.
Here every frequency points in its own direction. The scales are :class:`~.fourier.Fourier`'s:
``n_scales`` levels log-spaced per axis from half a period over the data to the finest wavelength
(x/y and z chosen separately from the data's spacings, so z keeps its own scale; x and y share one
ladder, so no in-plane axis is preferred). Level ``l`` holds ``n_dirs`` frequencies
``k = (u_x · f_xy(l), u_y · f_xy(l), u_z · f_z(l))`` for unit directions ``u``: a half-sphere
Fibonacci lattice (a half circle for one section) turned by a random rotation per level, so the
levels' directions interleave. Along an axis no frequency exceeds ``1 / min_wavelength``: the
finest detail (what the renderer samples at) is the axis encoding's. Coarse-to-fine annealing
opens the levels as :class:`~.fourier.Fourier` opens its per-axis ranks. With ``n_freq_z > 0``
the directions lie in the x/y plane (a half circle per level) and z gets the axis encoding's own
ladder of frequencies along z alone: no feature then varies in the plane and along z at once.

The directions are a function of the resolved settings and ``seed`` (numpy's PCG64 generator), so a
model file's JSON + seed rebuild them; they are also buffers in its weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .base import Encoding, Geometry, check_positive_int, check_positive_um, resolved
from .fourier import features, register_features


def directions(n_levels: int, n_dirs: int, planar: bool, seed: int) -> np.ndarray:
    """(n_levels, n_dirs, 3) unit vectors (u and −u are the same sin/cos pair): per level a
    half-sphere Fibonacci lattice under a random rotation, or for ``planar`` evenly spread
    in-plane angles with a random offset."""
    rng = np.random.default_rng([int(seed), 0x5EED])
    out = np.zeros((n_levels, n_dirs, 3))
    j = np.arange(n_dirs) + 0.5
    if planar:
        for lv in range(n_levels):
            th = np.pi * (j / n_dirs + rng.random())
            out[lv, :, 0], out[lv, :, 1] = np.cos(th), np.sin(th)
        return out
    cz = 1.0 - j / n_dirs  # uniform in cos → equal areas on the half sphere
    ph = j * np.pi * (3.0 - math.sqrt(5.0))  # golden angle
    r = np.sqrt(1.0 - cz ** 2)
    base = np.stack([r * np.cos(ph), r * np.sin(ph), cz], axis=1)
    for lv in range(n_levels):
        q, rr = np.linalg.qr(rng.standard_normal((3, 3)))
        q = q * np.sign(np.diag(rr))  # a uniformly random rotation (Haar)
        out[lv] = base @ q.T
    return out


@dataclass
class RandomFourier(Encoding):
    name = "rff"

    n_scales: int = 16  # log-spaced levels (the axis encoding's n_freq_xy)
    n_dirs: int = 4  # directions per level
    # > 0: the levels' directions lie in the x/y plane and z has its own ladder of this many
    # frequencies along z alone (the axis encoding's z features; they are constant in the plane,
    # so they cannot stripe it); 0: the directions spread over the sphere (oblique in z). 4 by
    # measurement (bench_generalize, 300 steps, seeds 0 and 1, missing sections): MERFISH 50 µm
    # Pearson 0.382 vs 0.370 oblique, HER2ST A3 0.259 vs 0.239, breast ST 0.282 vs 0.282
    n_freq_z: int = 4
    min_wavelength_xy_um: float | None = None  # finest wavelengths; None → from the data's spacings
    min_wavelength_z_um: float | None = None
    xy_wavelength_spacings: float = 2.0  # as in Fourier: × the spot spacing
    z_wavelength_spacings: float = 2.5  # as in Fourier: × the section spacing (one section: the spot spacing)
    center: tuple | None = resolved()
    extent: tuple | None = resolved()
    min_wavelength: tuple | None = resolved()  # (x, y, z) µm
    planar: bool | None = resolved()  # one section: directions in the x/y plane only

    def resolve(self, g: Geometry) -> "RandomFourier":
        lo, hi = np.asarray(g.lo, dtype=np.float64), np.asarray(g.hi, dtype=np.float64)
        wl_xy = float(self.min_wavelength_xy_um or self.xy_wavelength_spacings * g.spacing)
        wl_z = float(self.min_wavelength_z_um or g.finest_z_um(self.z_wavelength_spacings))
        return RandomFourier(self.n_scales, self.n_dirs, self.n_freq_z, wl_xy, wl_z, self.xy_wavelength_spacings,
                             self.z_wavelength_spacings, center=tuple(((lo + hi) / 2).tolist()),
                             extent=tuple((hi - lo).tolist()), min_wavelength=(wl_xy, wl_xy, wl_z),
                             planar=g.z_spacing is None)

    def _n_z(self) -> int:
        return 0 if self.planar else int(self.n_freq_z)

    def out_dim(self) -> int:
        return 3 + 2 * (int(self.n_scales) * int(self.n_dirs) + self._n_z())

    def detail_um(self):
        wl = self.min_wavelength
        return float(min(wl[0], wl[1])), (math.inf if self.planar else float(wl[2]))

    def validate(self):
        check_positive_int("rff", "n_scales", self.n_scales, 1, 256)
        check_positive_int("rff", "n_dirs", self.n_dirs, 1, 256)
        check_positive_int("rff", "n_freq_z", self.n_freq_z, 0, 256)
        for k in ("min_wavelength_xy_um", "min_wavelength_z_um", "xy_wavelength_spacings", "z_wavelength_spacings"):
            check_positive_um("rff", k, getattr(self, k))
        return self

    def check_resolved(self, bad):
        super().check_resolved(bad)
        if not isinstance(self.planar, bool):
            bad("'planar' must be true or false")
        wl = np.asarray(self.min_wavelength, dtype=np.float64)
        if len(self.center) != 3 or len(self.extent) != 3 or wl.shape != (3,):
            bad("'center', 'extent' and 'min_wavelength' hold 3 numbers each")
        if (wl <= 0).any() or (np.asarray(self.extent) < 0).any():
            bad("'min_wavelength' must be positive and 'extent' not negative")

    def frequencies(self, seed: int):
        """(3, n) frequency vectors in cycles/µm and each one's level rank in [0, 1] (numpy)."""
        ext = np.maximum(np.asarray(self.extent, dtype=np.float64), 1e-6)
        wl = np.asarray(self.min_wavelength, dtype=np.float64)
        ns, nd = int(self.n_scales), int(self.n_dirs)
        ext_xy = max(ext[0], ext[1], wl[0])  # one x/y ladder: no in-plane axis preferred
        nz = self._n_z()

        def ladder(e, lam, n):
            f_hi = 1.0 / lam
            f_lo = min(1.0 / (2.0 * e), f_hi)  # half a period over the data
            return np.geomspace(f_lo, f_hi, n) if n > 1 else np.array([f_hi])

        def ranks(n):
            return np.linspace(0, 1, n) if n > 1 else np.ones(1)

        lad_xy, lad_z = ladder(ext_xy, wl[0], ns), ladder(max(ext[2], wl[2]), wl[2], ns)
        scale = np.stack([lad_xy, lad_xy, lad_z], axis=1)  # (ns, 3)
        u = directions(ns, nd, bool(self.planar) or nz > 0, seed)
        k = (u * scale[:, None, :]).reshape(ns * nd, 3)
        rank = np.repeat(ranks(ns), nd)
        if nz > 0:  # z alone, as the axis encoding's z features
            kz = np.zeros((nz, 3))
            kz[:, 2] = ladder(max(ext[2], wl[2]), wl[2], nz)
            k, rank = np.concatenate([k, kz]), np.concatenate([rank, ranks(nz)])
        return k.T, rank

    # --- torch ----------------------------------------------------------------------------
    def init(self, m, seed: int):
        k, rank = self.frequencies(seed)
        extent = np.maximum(np.asarray(self.extent, dtype=np.float64), 1e-6)
        register_features(m, self.center, extent, 2 * np.pi * k, rank)

    def forward(self, m, xyz):
        return features(m, xyz)  # the axis encoding's coarse-to-fine window and linear part

    def anneal(self, m, progress: float):
        m.alpha.fill_(progress)
