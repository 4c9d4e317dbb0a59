"""One error type for bad user input: it names the file (or section) and the problem."""

from __future__ import annotations

import os


class InputError(ValueError):
    """Bad input from the user. ``str(err)`` is a one-line message ``"<source>: <problem>"``."""

    def __init__(self, source: str | os.PathLike | None, problem: str):
        self.source = str(source) if source is not None else None
        self.problem = problem
        msg = f"{self.source}: {problem}" if self.source else problem
        super().__init__(" ".join(msg.split()))
