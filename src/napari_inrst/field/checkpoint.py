"""Training checkpoints: what a run needs to continue where it stopped (``torch.save`` of tensors,
numbers and lists only; read back with ``weights_only=True``, so no code runs). Imports torch."""

from __future__ import annotations

import torch

from ..errors import InputError

FORMAT = "napari-inrst-checkpoint"


class Checkpointer:
    """Writes ``path`` every ``every`` steps (0: only when the run is cancelled), rank 0 only;
    ``meta`` (genes, config, phase, selection) goes with every checkpoint."""

    def __init__(self, path, every: int, meta: dict | None, rank: int = 0):
        self.path, self.every, self.meta, self.rank = path, int(every or 0), dict(meta or {}), rank

    def due(self, step: int) -> bool:
        return self.path is not None and self.rank == 0 and self.every > 0 and step % self.every == 0

    def save(self, state: dict):
        if self.path is None or self.rank != 0:
            return
        from ..io.atomic import atomic_path

        obj = {"format": FORMAT, **state, "meta": self.meta}
        with atomic_path(self.path) as tmp:
            torch.save(obj, tmp)


def load_checkpoint(path) -> dict:
    """Read a training checkpoint (``torch.load(weights_only=True)``: no code runs)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(path, "checkpoint not found") from None
    except Exception as exc:
        raise InputError(path, f"not a readable napari-inrst checkpoint ({str(exc).splitlines()[0][:160]})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise InputError(path, "not a napari-inrst checkpoint")
    return obj
