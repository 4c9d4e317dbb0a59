"""Run the ``napari-inrst`` CLI in a child process, so that its peak memory is its own."""

from __future__ import annotations

import json
import subprocess
import sys

_CODE = (
    "import resource, sys, time, json\n"
    "from napari_inrst.cli import main\n"
    "t = time.perf_counter()\n"
    "rc = main(sys.argv[1:])\n"
    "wall = time.perf_counter() - t\n"
    "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
    "try:\n"
    "    # VmHWM: this process's own peak; ru_maxrss also counts the parent's memory at fork\n"
    "    peak = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')) / 1024\n"
    "except (OSError, StopIteration, ValueError):\n"
    "    pass\n"
    "print(json.dumps({'rc': rc, 'wall_s': wall, 'peak_rss_mb': peak}))\n"
)


def run_cli(args) -> dict:
    """``napari-inrst ARGS`` in a child Python: ``{'rc', 'wall_s', 'peak_rss_mb'}`` (the child's
    wall time of ``main`` and peak resident memory). Raises RuntimeError with its stderr on failure."""
    r = subprocess.run([sys.executable, "-c", _CODE, *map(str, args)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])
