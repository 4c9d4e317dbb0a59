"""Rendering latency of a trained field on this machine, against interpolating the measured spots.

    python benchmarks/run.py --only render [--quick]

Model: the project's real :class:`~napari_inrst.field.model.FieldModel` with the default network
(Fourier encoding → 3×128 SiLU trunk → rank-64 latent → linear decoder for 300 genes; plus
the hash-grid variant in the full run), fitted briefly on the synthetic sample (the weights'
quality does not change the cost). float32, ``torch.inference_mode``, chunks of 32k points,
occupancy first so the trunk runs only on points inside tissue, one torch thread per render
(``render.plane.RENDER_THREADS``; two threads were several times slower on this shared 2-core
machine) — what the viewer does.

Two modes, both in every run: ``exact`` evaluates the network at every pixel/voxel; ``band``
(the viewer's default) samples it at 4 points per finest field scale (shortest Fourier
wavelength / finest hash cell) and resamples cubically to the grid — its error against ``exact``
on the same plane is reported (``band.plane_*_error_rel_range``, relative to the gene's range).

Figures (medians of several repetitions, milliseconds unless named _s), per encoding and mode:
* ``plane512_new_z_ms`` — a 512×512 plane of one gene at a z not seen before (cache cold).
* ``gene_switch_ms`` — another gene on the same view (latent cached: one small matrix product).
* ``volume128_s`` / ``volume256_s`` — one gene on a 128³ / 256³ grid over the field's bounds.
* baseline ``griddata2d_plane512_ms`` — ``scipy.interpolate.griddata(method="linear")`` of the
  nearest measured section's spots onto the same 512×512 plane (Delaunay included: a new z
  means a new section); ``griddata3d_plane512_ms`` interpolates all spots in 3D instead.
* ratios ``*_speedup_vs_griddata2d`` = baseline time / field time (> 1: the field is faster).
* ``ooc.*`` (full run only) — ``napari-inrst render --volume --shape 1024 1024 512 --oversample 4``
  (2 GiB of values) to OME-Zarr in a child process: ``wall_s``, ``peak_rss_mb`` (the child's), the bytes
  of values and of the files written, and ``peak_vs_values_ratio`` (< 1: larger than memory works);
  ``ooc_no_pyramid.*`` the same with ``--no-pyramid`` (what the pyramid costs).
"""

from __future__ import annotations

import os
import time

import numpy as np

from napari_inrst.render.resample import OVERSAMPLE  # band-limited sampling: the viewer's default


def _median_ms(fn, reps: int) -> float:
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts) * 1000)


def _fit(stack, encoding: str, steps: int):
    from napari_inrst.field import FieldConfig, Fourier, HashGrid, fit_field

    enc = Fourier(min_wavelength_xy_um=100.0) if encoding == "fourier" else HashGrid(finest_um=50.0)
    cfg = FieldConfig(encoding=enc, steps=steps, val_every=max(steps, 1), rc_pretrain_steps=10, device="cpu", seed=0)
    return fit_field(stack, cfg)


def _bench_model(prefix: str, field, stack, reps: int, volumes: dict, figs: dict):
    from napari_inrst.render import LatentCache, evaluate_plane, evaluate_volume, volume_grid
    from napari_inrst.render.plane import field_extent, plane_grid_for

    extent = field_extent(field)
    lo, hi = field.bounds()
    g0, g1 = field.genes.index(stack.genes[0]), field.genes.index(stack.genes[1])
    rng = np.random.default_rng(0)
    zs = iter(rng.uniform(lo[2], hi[2], 1000))
    evaluate_plane(field, plane_grid_for(field, float(lo[2]), extent, (64, 64)), [g0])  # warm-up
    grid_at = lambda z: plane_grid_for(field, z, extent, (512, 512))  # noqa: E731
    grid = grid_at(float((lo[2] + hi[2]) / 2))
    for mode, ov in (("exact", None), ("band", OVERSAMPLE)):
        r = (1 if prefix.startswith("hash") else max(3, reps // 3)) if mode == "exact" else reps
        figs[f"{prefix}{mode}.plane512_new_z_ms"] = _median_ms(
            lambda: evaluate_plane(field, grid_at(next(zs)), [g0], oversample=ov), r)
        cache = LatentCache()
        evaluate_plane(field, grid, [g0], cache=cache, oversample=ov)
        genes = iter(rng.integers(0, len(field.genes), 1000))
        figs[f"{prefix}{mode}.gene_switch_ms"] = _median_ms(
            lambda: evaluate_plane(field, grid, [int(next(genes))], cache=cache, oversample=ov), max(reps, 10))
        for res in volumes[mode]:
            vg = volume_grid((lo, hi), shape=(res, res, res), budget_bytes=float("inf"))
            t0 = time.perf_counter()
            evaluate_volume(field, vg, [g1], oversample=ov)
            figs[f"{prefix}{mode}.volume{res}_s"] = round(time.perf_counter() - t0, 3)
    # accuracy of band-limited sampling against every pixel evaluated (same plane, 3 genes)
    exact = evaluate_plane(field, grid, [g0, g1, 2])
    band = evaluate_plane(field, grid, [g0, g1, 2], oversample=OVERSAMPLE)
    both = np.isfinite(exact) & np.isfinite(band)
    span = np.nanpercentile(exact, 99.5) - np.nanpercentile(exact, 0.5)
    d = np.abs(exact - band)[both]
    figs[f"{prefix}band.plane_rms_error_rel_range"] = float(f"{np.sqrt((d ** 2).mean()) / span:.2e}")
    figs[f"{prefix}band.plane_max_error_rel_range"] = float(f"{d.max() / span:.2e}")
    figs[f"{prefix}band.plane_mask_agreement"] = round(float((np.isfinite(exact) == np.isfinite(band)).mean()), 5)
    return grid


def _griddata(stack, grid, gene: int, reps: int, figs: dict):
    from scipy.interpolate import griddata

    zs = stack.z
    ys = grid.y0 + np.arange(grid.ny) * grid.dy
    xs = grid.x0 + np.arange(grid.nx) * grid.dx
    gx, gy = np.meshgrid(xs, ys)
    i = int(np.argmin(np.abs(zs - grid.z)))
    s = stack[i]
    figs["griddata2d_plane512_ms"] = _median_ms(
        lambda: griddata(s.xy, s.X[:, gene], (gx, gy), method="linear"), reps)
    figs["griddata_spots_per_section"] = int(s.n_obs)
    xyz = stack.coords()
    vals = stack.expression()[:, gene]
    q = np.column_stack([gx.ravel(), gy.ravel(), np.full(gx.size, grid.z)])
    figs["griddata3d_plane512_ms"] = _median_ms(lambda: griddata(xyz, vals, q, method="linear"), max(1, reps // 3))


def _out_of_core(model, figs: dict, shape=(1024, 1024, 512), extra=(), key="ooc"):
    """The CLI's streamed volume write in a child process (its own peak memory)."""
    import tempfile
    from pathlib import Path

    from _child import run_cli

    with tempfile.TemporaryDirectory(prefix="inrst_ooc_") as d:
        mfile, out = Path(d) / "m.inrst", Path(d) / "v.zarr"
        model.save(mfile)
        args = ["render", str(mfile), "--gene", model.genes[0], "--volume", "--shape", *map(str, shape),
                "--oversample", str(OVERSAMPLE), "--out", str(out), *extra]
        res = run_cli(args)
        written = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    values_mb = 4.0 * np.prod(shape) / 2**20
    figs[f"{key}.shape_xyz"] = "x".join(map(str, shape))
    figs[f"{key}.wall_s"] = round(res["wall_s"], 1)
    figs[f"{key}.peak_rss_mb"] = round(res["peak_rss_mb"], 0)
    figs[f"{key}.values_mb"] = round(values_mb, 0)
    figs[f"{key}.written_mb"] = round(written / 2**20, 0)
    figs[f"{key}.peak_vs_values_ratio"] = round(res["peak_rss_mb"] / values_mb, 3)


def run(quick: bool = False) -> dict:
    import torch

    from napari_inrst.synthetic.sample import sample_stack

    figs: dict = {}
    stack, _ = sample_stack()
    stack.set_transforms([s.adata.uns["truth_matrix"] for s in stack.sections])  # aligned: the true frame
    reps = 5 if quick else 9
    figs["torch_threads"] = torch.get_num_threads()
    figs["cpu_count"] = os.cpu_count()
    encodings = ["fourier"] if quick else ["fourier", "hash"]
    grid = None
    for enc in encodings:
        t0 = time.perf_counter()
        model = _fit(stack, enc, steps=20 if quick else 60)
        figs[f"{enc}.fit_s"] = round(time.perf_counter() - t0, 1)
        figs[f"{enc}.model"] = (f"FieldModel {enc}, trunk {model.spec.depth}x{model.spec.width}, "
                                f"rank {model.rank}, {len(model.genes)} genes")
        if quick:
            volumes = {"exact": [], "band": [128]}
        elif enc == "fourier":
            volumes = {"exact": [128], "band": [128, 256]}
        else:  # the pure-PyTorch hash grid is slow on CPU: band-limited volumes only
            volumes = {"exact": [], "band": [128, 256]}
        grid = _bench_model(f"{enc}.", model, stack, reps, volumes, figs)
        if enc == "fourier" and not quick:
            _out_of_core(model, figs)
            _out_of_core(model, figs, extra=["--no-pyramid"], key="ooc_no_pyramid")
    _griddata(stack, grid, 0, reps, figs)
    base = figs["griddata2d_plane512_ms"]
    for enc in encodings:
        for mode in ("exact", "band"):
            p = f"{enc}.{mode}."
            figs[p + "plane512_speedup_vs_griddata2d"] = round(base / figs[p + "plane512_new_z_ms"], 2)
            figs[p + "gene_switch_speedup_vs_griddata2d"] = round(base / figs[p + "gene_switch_ms"], 1)
            figs[p + "plane512_meets_100ms"] = str(figs[p + "plane512_new_z_ms"] <= 100.0)
            figs[p + "gene_switch_meets_20ms"] = str(figs[p + "gene_switch_ms"] <= 20.0)
    try:
        with open("/proc/loadavg") as fh:
            figs["load_average_1min"] = float(fh.read().split()[0])
    except OSError:
        pass
    return {k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in figs.items()}


if __name__ == "__main__":  # pragma: no cover
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
