"""An LRU cache of latent features per view, so switching gene is one small matrix product.

An entry holds, for one grid (``grid.key()``) of one field, the tissue mask of the grid points and
the (m, r) float32 latent of the m points inside tissue. Entries larger than the budget are not
kept; the least recently used entries are dropped when the budget is exceeded. Thread-safe (the
viewer's worker thread fills it, the UI thread reads it).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np


@dataclass
class LatentEntry:
    mask: np.ndarray  # (n,) bool, True inside tissue (row-major over the grid)
    latent: np.ndarray  # (mask.sum(), r) float32
    occ: np.ndarray | None = None  # (n,) float32 occupancy probability (None: not masked)

    @property
    def nbytes(self) -> int:
        return int(self.mask.nbytes + self.latent.nbytes + (self.occ.nbytes if self.occ is not None else 0))


class LatentCache:
    """``get(field, key)`` / ``put(field, key, entry)`` with a byte budget (default 512 MiB)."""

    def __init__(self, budget_bytes: float = 512 * 2**20):
        self.budget = float(budget_bytes)
        self._d: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _k(field, key):
        return (id(field), key)

    def get(self, field, key) -> LatentEntry | None:
        with self._lock:
            e = self._d.get(self._k(field, key))
            if e is None:
                self.misses += 1
                return None
            self._d.move_to_end(self._k(field, key))
            self.hits += 1
            return e

    def fits(self, nbytes: float) -> bool:
        return nbytes <= self.budget

    def put(self, field, key, entry: LatentEntry) -> bool:
        """Keep ``entry`` (evicting old ones); False if it alone exceeds the budget."""
        if entry.nbytes > self.budget:
            return False
        with self._lock:
            self._d[self._k(field, key)] = entry
            self._d.move_to_end(self._k(field, key))
            while self.nbytes > self.budget and len(self._d) > 1:
                self._d.popitem(last=False)
        return True

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self._d.values())

    def clear(self):
        with self._lock:
            self._d.clear()

    def __len__(self):
        return len(self._d)
