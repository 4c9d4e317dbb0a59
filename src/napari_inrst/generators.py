"""Long work is written as generators that yield progress and *return* their result, so the GUI
can drive them step by step (and cancel between steps) while scripts just want the result."""

from __future__ import annotations

from typing import Generator, TypeVar

R = TypeVar("R")


def run_to_end(gen: Generator[object, None, R]) -> R:
    """Exhaust ``gen``, ignoring what it yields, and return its return value."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
