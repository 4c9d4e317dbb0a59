"""The interface every expression field offers (numpy in, numpy out; µm stack-frame coordinates).

A field evaluates a low-rank latent at points once, then decodes any genes from it with one
matrix product — so switching the displayed gene never re-runs the trunk:

    lat = field.latent(xyz)                    # (n, r) float32
    vals = field.decode(lat, [g1, g2])         # (n, 2) float32, values in the stack's space
    occ = field.occupancy(xyz)                 # (n,) float32 in [0, 1]
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class ExpressionField(Protocol):
    genes: list[str]

    def latent(self, xyz: np.ndarray) -> np.ndarray:
        """(n, 3) points (x, y, z) in µm, stack frame → (n, r) float32 latent features."""

    def decode(self, latent: np.ndarray, genes: Sequence[int]) -> np.ndarray:
        """(n, r) latent → (n, len(genes)) float32 expression of the given gene indices."""

    def occupancy(self, xyz: np.ndarray) -> np.ndarray:
        """(n, 3) points → (n,) probability that each lies in tissue."""

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(min, max) of (x, y, z) in µm over the measured data."""


class TruthField:
    """The synthetic sample's analytic truth as an :class:`ExpressionField` (for tests and benchmarks).

    Its latent is the full truth vector (r = number of genes) and its decoder is a selection.
    """

    def __init__(self, tissue, genes: Sequence[str] | None = None):
        self.tissue = tissue
        self.genes = list(genes) if genes is not None else list(tissue.genes)
        self._idx = np.array([tissue.genes.index(g) for g in self.genes])

    def latent(self, xyz):
        return self.tissue.truth(np.asarray(xyz, dtype=np.float64))[:, self._idx]

    def decode(self, latent, genes):
        return np.asarray(latent, dtype=np.float32)[:, list(genes)]

    def occupancy(self, xyz):
        return self.tissue.inside(np.asarray(xyz, dtype=np.float64)).astype(np.float32)

    def bounds(self):
        t = self.tissue
        return np.array([0.0, 0.0, 0.0]), np.array([t.width, t.height, t.depth])
