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


def run_gui_child(script, name: str, quick: bool = False, extra_paths=()) -> dict:
    """``python SCRIPT --child [--quick]`` under ``xvfb-run`` when there is no display (the GUI
    benchmarks measure a real Qt event loop), with ``src`` and ``extra_paths`` on its path and one
    torch/BLAS thread by default; returns the JSON object of the child's last ``{``-line, or
    ``{'skipped': ...}`` without a display or xvfb-run. Raises RuntimeError (naming ``name``) when
    the child fails."""
    import os
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(Path(script).resolve()), "--child"] + (["--quick"] if quick else [])
    if not os.environ.get("DISPLAY"):
        xvfb = shutil.which("xvfb-run")
        if xvfb is None:
            return {"skipped": "no display and no xvfb-run"}
        cmd = [xvfb, "-a", "-s", "-screen 0 1600x1000x24"] + cmd
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    env["PYTHONPATH"] = os.pathsep.join([str(root / "src"), *map(str, extra_paths), env.get("PYTHONPATH", "")])
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    sys.stderr.write(out.stderr[-4000:])
    line = next((ln for ln in reversed(out.stdout.splitlines()) if ln.startswith("{")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"{name} benchmark child failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(line)
