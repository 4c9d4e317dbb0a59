"""Benchmark runner: every ``benchmarks/bench_*.py`` module's named figures, as JSON and a table.

    python benchmarks/run.py [--quick] [--only align,render] [--json OUT]

Each module exposes ``run(quick: bool) -> dict`` of named figures (numbers or strings). Speed and
quality figures come with the baseline measured in the same run and the ratio. Figures on
``../shared/data`` are skipped (with the reason) when that folder is absent.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine() -> dict:
    info = {"python": platform.python_version(), "cpu_count": os.cpu_count(), "platform": platform.platform()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception as exc:  # noqa: BLE001
        info["torch"] = f"unavailable ({exc})"
    try:
        with open("/proc/cpuinfo") as fh:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    return info


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(HERE))
    spec.loader.exec_module(mod)
    return mod


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes; finishes in under ~2 minutes on 2 cores")
    ap.add_argument("--only", default="", help="comma-separated areas (align, evaluate, field, gui, render, scale, "
                    "load, refine, deform, generalize, large); generalize rows: GENERALIZE_ROWS=prefix,… (see benchmarks/bench_generalize.py)")
    ap.add_argument("--json", metavar="OUT", help="write all figures as JSON here")
    args = ap.parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    results = {"machine": machine(), "quick": bool(args.quick), "figures": {}, "errors": {}}
    for path in sorted(HERE.glob("bench_*.py")):
        area = path.stem[len("bench_"):]
        if only and area not in only:
            continue
        print(f"== {area} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            figs = _load(path).run(quick=args.quick)
        except Exception as exc:  # noqa: BLE001 - one failing area must not hide the others
            traceback.print_exc()
            results["errors"][area] = f"{type(exc).__name__}: {exc}"
            continue
        figs[f"{area}.bench_seconds"] = round(time.perf_counter() - t0, 2)
        results["figures"].update({k if k.startswith(area + ".") else f"{area}.{k}": v for k, v in figs.items()})
    results["figures"]["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    width = max((len(k) for k in results["figures"]), default=10)
    print(f"{'figure':<{width}}  value")
    print(f"{'-' * width}  -----")
    for k, v in results["figures"].items():
        print(f"{k:<{width}}  {_fmt(v)}")
    for k, v in results["errors"].items():
        print(f"{k:<{width}}  ERROR {v}")
    text = json.dumps(results, indent=2, default=float)
    if args.json:
        Path(args.json).write_text(text)
    else:
        print(text)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
