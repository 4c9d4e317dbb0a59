"""Load test: the CLI's largest outputs with bounded memory, each in a child process.

    python benchmarks/run.py --only load [--quick]

Model: the project's default network (Fourier encoding → 3×128 SiLU trunk → low-rank latent →
linear decoder) fitted briefly on the synthetic sample, its 20 most variable genes (the weights'
quality does not change the cost; the gene count sets the CSV's width).

Figures:
* ``predict.*`` — ``napari-inrst predict`` of 10⁷ query points (quick: 10⁶) × 20 genes to CSV:
  ``rows_per_s`` (end to end: reading the queries, evaluating, writing), ``peak_rss_gb`` (the
  child's), ``csv_gb`` written. The bar (issue 15): 10⁷ rows with peak memory < 2 GB.
* ``csv_writer.*`` — formatting the same values as CSV: ``napari_inrst.io.tables.format_csv_block``
  against the baseline ``pandas.DataFrame.to_csv(float_format="%.6g")`` (what predict used before),
  values per second and the ratio (> 1: faster than pandas).
* ``render_volume.*`` — ``napari-inrst render --volume --shape 1024 1024 1024 --oversample 4``
  (quick: 256³) to OME-Zarr with its pyramid: ``wall_s``, ``peak_rss_gb``, ``values_gb`` (what the
  volume holds: the peak stays far below it).
"""

from __future__ import annotations

import io
import tempfile
import time
from pathlib import Path

import numpy as np

GENES = 20


def _model():
    from napari_inrst.field import FieldConfig, Fourier, fit_field
    from napari_inrst.stack.prepare import select_model_genes
    from napari_inrst.synthetic.sample import sample_stack

    stack, _ = sample_stack()
    stack.set_transforms([s.adata.uns["truth_matrix"] for s in stack.sections])
    select_model_genes(stack, GENES)
    cfg = FieldConfig(steps=60, val_every=60, device="cpu", seed=0, ensemble=1,
                      encoding=Fourier(min_wavelength_xy_um=100.0))
    return fit_field(stack, cfg)


def _queries(path: Path, model, n: int, seed: int = 0):
    """``n`` uniform query points over the field's bounds, written in blocks (x, y, z header)."""
    from napari_inrst.io.tables import format_csv_block

    lo, hi = model.bounds()
    rng = np.random.default_rng(seed)
    with open(path, "wb") as fh:
        fh.write(b"x,y,z\n")
        for s in range(0, n, 1_000_000):
            k = min(1_000_000, n - s)
            fh.write(format_csv_block(rng.uniform(lo, hi, (k, 3))))


def _writer_speed(model, figs):
    import pandas as pd

    from napari_inrst.io.tables import format_csv_block

    lo, hi = model.bounds()
    vals = model.predict(np.random.default_rng(1).uniform(lo, hi, (50_000, 3)))
    t = time.perf_counter()
    format_csv_block(vals)
    t_new = time.perf_counter() - t
    t = time.perf_counter()
    pd.DataFrame(vals, columns=model.genes).to_csv(io.StringIO(), index=False, float_format="%.6g")
    t_pd = time.perf_counter() - t
    figs["csv_writer.values_per_s"] = round(vals.size / t_new)
    figs["csv_writer.baseline_pandas_values_per_s"] = round(vals.size / t_pd)
    figs["csv_writer.speedup_vs_pandas"] = round(t_pd / t_new, 2)


def run(quick: bool = False) -> dict:
    from _child import run_cli

    figs: dict = {}
    model = _model()
    _writer_speed(model, figs)
    n = 1_000_000 if quick else 10_000_000
    side = 256 if quick else 1024
    with tempfile.TemporaryDirectory(prefix="inrst_load_") as d:
        d = Path(d)
        mfile, q, out = d / "m.inrst", d / "q.csv", d / "p.csv"
        model.save(mfile)
        _queries(q, model, n)
        res = run_cli(["predict", str(mfile), "--coords", str(q), "--out", str(out), "--quiet"])
        figs["predict.rows"] = n
        figs["predict.genes"] = len(model.genes)
        figs["predict.wall_s"] = round(res["wall_s"], 1)
        figs["predict.rows_per_s"] = round(n / res["wall_s"])
        figs["predict.peak_rss_gb"] = round(res["peak_rss_mb"] / 1024, 3)
        figs["predict.csv_gb"] = round(out.stat().st_size / 1e9, 2)
        out.unlink()
        vol = d / "v.zarr"
        res = run_cli(["render", str(mfile), "--gene", model.genes[0], "--volume", "--shape", side, side, side,
                       "--oversample", "4", "--out", str(vol)])
        figs["render_volume.shape_xyz"] = f"{side}x{side}x{side}"
        figs["render_volume.wall_s"] = round(res["wall_s"], 1)
        figs["render_volume.peak_rss_gb"] = round(res["peak_rss_mb"] / 1024, 3)
        figs["render_volume.values_gb"] = round(4.0 * side**3 / 2**30, 2)
    return figs
