"""The schedules of a training run: the learning rate and the encoding's coarse-to-fine window.
No torch."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LRSchedule:
    """Linear warm-up (``min(50, total / 20)`` steps), then cosine decay to 5 % of ``base``."""

    base: float
    total: int

    def __call__(self, step: int) -> float:
        warm = min(50, max(self.total // 20, 1))
        if step < warm:
            return self.base * (step + 1) / warm
        t = (step - warm) / max(self.total - warm, 1)
        return self.base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


@dataclass(frozen=True)
class AnnealSchedule:
    """The encoding opens coarse-to-fine over the first ``steps`` steps (``anneal_frac`` of the
    run); early stopping counts no stalls before it has opened."""

    steps: int

    @classmethod
    def of(cls, anneal_frac: float, total: int) -> "AnnealSchedule":
        return cls(max(int(anneal_frac * total), 0))

    def progress(self, step: int) -> float:
        """How far the window is open while taking step ``step`` (0-based)."""
        return 1.0 if self.steps == 0 else min(1.0, (step + 1) / self.steps)

    def kept(self, best_step: int) -> float:
        """The window of the weights kept at ``best_step`` (steps taken)."""
        return 1.0 if self.steps == 0 else min(1.0, best_step / max(self.steps, 1)) if best_step else 1.0

    def opened(self, step: int) -> bool:
        return step >= self.steps
