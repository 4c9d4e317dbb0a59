"""Exponential moving average of a network's weights (validated, kept and returned: smoother,
less variance than the last weights). Imports torch."""

from __future__ import annotations

import copy

import torch


class EMA:
    """``decay`` ≤ 0: no average, :attr:`net` is the trained network itself."""

    def __init__(self, net, decay: float):
        self.decay = float(decay)
        self.net = copy.deepcopy(net) if self.decay > 0 else net
        self._avg = list(self.net.parameters())
        self._src = list(net.parameters())

    @property
    def active(self) -> bool:
        return self.decay > 0

    def update(self, step: int):
        """After optimizer step ``step``: average ← lerp toward the weights (warm-up: a short
        memory early on)."""
        if not self.active:
            return
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        with torch.no_grad():
            torch._foreach_lerp_(self._avg, self._src, 1.0 - d)

    def state_dict(self) -> dict:
        return self.net.state_dict() if self.active else {}

    def load_state_dict(self, state: dict | None):
        if self.active and state:
            self.net.load_state_dict(state)
