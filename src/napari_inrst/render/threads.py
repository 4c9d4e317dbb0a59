"""Torch intra-op threads while rendering, per calling thread (no-op until torch is loaded)."""

from __future__ import annotations

import contextlib
import sys

#: torch intra-op threads while rendering (per calling thread; None: leave as is). On a small,
#: shared CPU one thread per render avoids oversubscription with the UI, BLAS and other work,
#: and was several times faster than two in benchmarks/bench_render.py.
RENDER_THREADS: int | None = 1


@contextlib.contextmanager
def render_threads(n: int | None = None):
    """Temporarily set torch's intra-op threads of *this* thread (no-op without torch loaded)."""
    n = RENDER_THREADS if n is None else n
    torch = sys.modules.get("torch")
    if torch is None or not n:
        yield
        return
    old = torch.get_num_threads()
    if old != n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        if old != n:
            torch.set_num_threads(old)
