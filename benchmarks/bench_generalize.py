"""Generalization benchmark (issue 13): the field against the best interpolation baseline on every
shared real data set and on synthetic cases that reproduce known failure modes, one row per task.

Rows (decision metric per EVALUATION.md: MERFISH Pearson on 50 µm bins; spot data per-spot Pearson
on the 200 most expressed genes; synthetic data per-spot Pearson on all genes):

* ``merfish_sec_<k>``  — MERFISH hypothalamus, section k held out, predicted from the other four
  (log1p of the values as given, as given aligned); baselines knn3d, adjacent.
* ``merfish_cells_<k>`` — MERFISH section k alone, half of its cells removed (single cells; 50 µm
  bins, the per-cell Pearson beside it); knn2d.
* ``breast_sec_<k>``   — breast ST, interior section k held out (stack aligned first); knn3d, adjacent.
* ``breast_spots_<k>`` — breast ST section k, 50 % of the spots removed (seed 0); knn2d.
* ``dlpfc_spots_<id>`` — DLPFC Visium section, 50 % removed (the paper's task); knn2d; plus layer
  ARI (a classifier trained on the kept spots, applied to the predictions) and SSIM, next to the
  paper's 0.65 / 0.70.
* ``dlpfc_sec_<id>``   — DLPFC, 151674 (z = 10 µm) or 151675 (z = 310 µm) held out: across the
  10 µm gap from its partner; the 4 sections aligned first; knn3d, adjacent.
* ``her2st_<P><k>``    — HER2ST tumour P, interior section k held out (stack aligned first).
* ``synth_*``          — synthetic tissue (known truth, Poisson counts): an outline that moves
  between thin sections (``synth_outline``), z patterns near the section spacing
  (``synth_zwave``), the sample in array units (``synth_array_units``, spot spacing 1),
  very few spots (``synth_few_spots``: one section, ~120 spots, half removed).

Compute is scarce: choose rows with ``GENERALIZE_ROWS=merfish,her2st_A`` (comma-separated row
name prefixes) and ``GENERALIZE_STEPS`` (training steps, default the config's); each finished
row is appended to ``GENERALIZE_OUT`` (JSON lines) as soon as it is measured; ``GENERALIZE_SEED`` (default 0).
``GENERALIZE_ENCODINGS=fourier,rff`` runs every chosen row once per encoding (same seeds; rows
named ``<row>@<encoding>``); ``GENERALIZE_CONFIG`` (JSON) overrides fields of the fit's recipe; an entry may be an encoding's JSON settings, entries then separated by
``;`` (``GENERALIZE_ENCODINGS='fourier;{"name": "rff", "n_dirs": 8}'``); unset: the default encoding.

    python benchmarks/run.py --only generalize [--quick]      # quick: one row per data set
    GENERALIZE_ROWS=synth python benchmarks/bench_generalize.py
    python benchmarks/bench_generalize.py --table rows.jsonl [more.jsonl …]   # table of saved rows
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PAPER_DLPFC = {"ari": 0.65, "ssim": 0.70}


# --- data ----------------------------------------------------------------------------------
def _counts_stack(paths, z, names=None, align=True, n_genes=None):
    from napari_inrst.stack.prepare import select_model_genes
    from napari_inrst.io.readers import read_h5ad
    from napari_inrst.stack import build_stack

    ads = [read_h5ad(p, counts_expected=True) for p in paths]
    st = build_stack(ads, z, names=names or [Path(p).stem for p in paths], normalize="log1p")
    select_model_genes(st, n_genes)  # fit's default gene choice (≤ 2,000 genes)
    if align and len(st) > 1:
        from napari_inrst.align import align_stack

        align_stack(st, method="rigid").apply(st)
    return st


def merfish():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_field import merfish_stack

    return merfish_stack()[1]


def breast(align=True):
    paths = sorted((SHARED / "breast_st").glob("section*.h5ad"))
    st = _counts_stack(paths, [200.0 * i for i in range(len(paths))], align=False)
    for s in st.sections:  # array coordinates → µm (200 µm pitch), as the README's breast rows
        s.adata.obsm["spatial"] = np.asarray(s.adata.obsm["spatial"]) * 200.0
    if align:
        from napari_inrst.align import align_stack

        align_stack(st, method="rigid").apply(st)
    return st


def dlpfc(ids=None, align=True):
    from napari_inrst.io.readers import read_h5ad

    paths = sorted((SHARED / "dlpfc_visium").glob("*.h5ad"))
    if ids is not None:
        paths = [p for p in paths if p.stem in ids]
    z = [float(read_h5ad(p, counts_expected=True).uns["z_um"]) for p in paths]
    return _counts_stack(paths, z, align=align)


def her2st(patient):
    from napari_inrst.io.readers import read_h5ad

    paths = sorted((SHARED / "her2st" / patient).glob("*.h5ad"), key=lambda p: int(p.stem[1:]))
    z = [float(read_h5ad(p, counts_expected=True).uns["z_um"]) for p in paths]
    return _counts_stack(paths, z)


class _Tissue:
    """Synthetic tissue variants (subclasses of the sample's analytic tissue)."""

    @staticmethod
    def outline(depth):
        from napari_inrst.synthetic.sample import SyntheticTissue

        class Moving(SyntheticTissue):
            # a shell whose radius and centre change along z: cells of a missing section lie off
            # the support of the kept ones
            def inside(self, xyz):
                u, v, w = self._norm(xyz)
                s = 0.75 + 0.25 * np.sin(2 * np.pi * w * 1.5)
                uu, vv = u - 0.15 * np.sin(2 * np.pi * w), v
                r = np.hypot(uu / 1.3, vv) / s
                return (r <= 1.0) & (w >= -0.05) & (w <= 1.05)

        return Moving(n_genes=84, depth=depth, seed=3)

    @staticmethod
    def zwave(depth, period):
        from napari_inrst.synthetic.sample import SyntheticTissue

        class ZWave(SyntheticTissue):
            # every program modulated along z with a period of ~3 section spacings
            def programs(self, xyz):
                p = super().programs(xyz)
                z = np.asarray(xyz, dtype=np.float64)[:, 2]
                mod = 0.5 * (1 + np.sin(2 * np.pi * z[:, None] / period + np.arange(p.shape[1])[None, :]))
                return p * (0.4 + 1.2 * mod)

        return ZWave(n_genes=84, depth=depth, seed=5)


def synth_stack(tissue, zs, spot_spacing, seed=0, unit=1.0, library_size=3000.0):
    """Poisson counts of ``tissue`` on sections at ``zs`` (µm); coordinates and z divided by
    ``unit`` (unit = 50: coordinates in array units of a 50 µm pitch)."""
    import anndata as ad
    import pandas as pd

    from napari_inrst.stack import build_stack

    rng = np.random.default_rng(seed)
    ads = []
    for z in zs:
        xy = tissue.spots(z, spot_spacing, rng)
        xyz = np.column_stack([xy, np.full(len(xy), z)])
        lib = rng.lognormal(np.log(library_size), 0.35, len(xy))
        counts = rng.poisson(tissue.rates(xyz) * lib[:, None]).astype(np.float32)
        a = ad.AnnData(X=counts, obs=pd.DataFrame(index=[f"z{z:g}_{k}" for k in range(len(xy))]),
                       var=pd.DataFrame(index=tissue.genes))
        a.obsm["spatial"] = xy / unit
        ads.append(a)
    return build_stack(ads, [z / unit for z in zs], names=[f"z{z:g}" for z in zs], normalize="log1p")


# --- protocol --------------------------------------------------------------------------------
def _config(encoding=None):
    from napari_inrst.field import FieldConfig

    if isinstance(encoding, str) and encoding.startswith("{"):
        encoding = json.loads(encoding)
    seed = int(os.environ.get("GENERALIZE_SEED", 0))
    cfg = FieldConfig(seed=seed) if encoding is None else FieldConfig(seed=seed, encoding=encoding)
    steps = os.environ.get("GENERALIZE_STEPS")
    if steps:
        cfg = cfg.replace(steps=int(steps))
    extra = os.environ.get("GENERALIZE_CONFIG")  # JSON overrides of FieldConfig, e.g. '{"standardize": true}'
    if extra:
        cfg = cfg.replace(**json.loads(extra))
    return cfg


class _Recorder:
    """Wraps the field's fit function to keep the model (validation report, blend weight)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.model = None

    def __call__(self, stack, sections):
        from napari_inrst.field.fit import fit_field

        self.model = fit_field(stack, self.cfg, sections=list(sections))
        return self.model


def _row(name, data, task, res, metric, extra=None):
    meths = res["methods"]
    field = meths["inr"][metric]
    base = {k: v[metric] for k, v in meths.items() if k != "inr" and metric in v}
    best = max(base, key=base.get)
    row = {"row": name, "data": data, "task": task, "metric": metric, "field": round(field, 4),
           "best_baseline": best, "baseline": round(base[best], 4), "margin": round(field - base[best], 4),
           "fit_seconds": round(meths["inr"]["fit_seconds"], 1)}
    row.update(extra or {})
    return row


def _model_extra(rec):
    m = rec.model
    v = m.validation
    mix = m.interp.mix if m.interp is not None else None
    return {"blend_weight": m.blend_weight, "blend_mix": mix, "self_report": {k: v.get(k) for k in
            ("task", "field", "network", "interpolation", "interpolation_sections", "sections")}}


def section_row(name, data, stack, h, metric, cfg, labels_key=None):
    from napari_inrst.evaluate.protocol import leave_out

    rec = _Recorder(cfg)
    res = leave_out(stack, None, [h], baselines=("knn3d", "adjacent"), fit_fns={"inr": rec},
                    ssim=False, labels_key=labels_key)
    return _row(name, data, f"missing section {stack[h].name}", res, metric, _model_extra(rec))


def spots_row(name, data, stack, i, cfg, labels_key=None, ssim=False, metric="pearson"):
    from napari_inrst.measure import metrics as M
    from napari_inrst.evaluate.protocol import drop_spots, intra_section, select_genes

    rec = _Recorder(cfg)
    res = intra_section(stack, i, None, baselines=("knn2d",), fit_fns={"inr": rec}, ssim=ssim)
    extra = _model_extra(rec)
    if labels_key is not None:  # layer ARI: a classifier trained on the kept spots' measured expression
        kept, removed = drop_spots(stack, i, 0.5, 0)
        gidx, _ = select_genes(kept, [i], "auto")
        s, k = stack[i], kept[i]
        lab_k = np.asarray(k.adata.obs[labels_key]).astype(str)
        lab_r = np.asarray(s.adata.obs[labels_key]).astype(str)[removed]
        ok_k = ~np.isin(lab_k, ("nan", "NA", "None", ""))
        ok_r = ~np.isin(lab_r, ("nan", "NA", "None", ""))
        clf = M.LabelClassifier().fit(k.X[ok_k][:, gidx], lab_k[ok_k])
        q = s.xyz[removed][ok_r]
        from napari_inrst.measure.baselines import knn2d

        preds = {"inr": rec.model.predict(q)[:, gidx], "knn2d": knn2d(k.xyz, k.X, q)[:, gidx]}
        for meth, p in preds.items():
            extra[f"ari_{meth}"] = round(float(M.adjusted_rand_score(lab_r[ok_r], clf.predict(p))), 4)
        measured = s.X[removed][ok_r][:, gidx]
        extra["ari_measured"] = round(float(M.adjusted_rand_score(lab_r[ok_r], clf.predict(measured))), 4)
    if ssim:
        extra["ssim_inr"] = round(res["methods"]["inr"]["ssim"], 4)
        extra["ssim_knn2d"] = round(res["methods"]["knn2d"]["ssim"], 4)
    if metric != "pearson":  # single cells: the per-cell figure beside the decision metric
        for meth, v in res["methods"].items():
            extra[f"pearson_cell_{meth}"] = round(float(v["pearson"]), 4)
    what = "cells" if res.get("single_cell") else "spots"
    return _row(name, data, f"missing {what} (50 %) {res['section']}", res, metric, extra)


def rows(quick: bool, encoding=None, cache=None):
    """(name, thunk) for every row; thunks load data lazily (cached per data set in ``cache``)."""
    cfg = _config(encoding)
    cache = {} if cache is None else cache

    def get(key, fn):
        if key not in cache:
            cache[key] = fn()
        return cache[key]

    out = []
    if (SHARED / "merfish_hypothalamus").exists():
        for h in ([2] if quick else [1, 2, 3]):
            out.append((f"merfish_sec_{h}", lambda h=h: section_row(
                f"merfish_sec_{h}", "MERFISH", get("merfish", merfish), h, "pearson_50um", cfg)))
        for i in ([2] if quick else [1, 3]):  # single cells: half of one section's cells removed
            out.append((f"merfish_cells_{i}", lambda i=i: spots_row(
                f"merfish_cells_{i}", "MERFISH", get("merfish", merfish).select([i]), 0, cfg,
                metric="pearson_50um")))
    if (SHARED / "breast_st").exists():
        for h in ([1] if quick else [1, 2]):
            out.append((f"breast_sec_{h}", lambda h=h: section_row(
                f"breast_sec_{h}", "breast ST", get("breast", breast), h, "pearson", cfg)))
        for i in ([0] if quick else [0, 1, 2, 3]):
            out.append((f"breast_spots_{i}", lambda i=i: spots_row(
                f"breast_spots_{i}", "breast ST", get("breast1", lambda: breast(align=False)).select([i]), 0, cfg)))
    if (SHARED / "dlpfc_visium").exists():
        for sid in (["151673"] if quick else ["151673", "151674", "151675", "151676"]):
            out.append((f"dlpfc_spots_{sid}", lambda sid=sid: spots_row(
                f"dlpfc_spots_{sid}", "DLPFC Visium", get(f"dlpfc_{sid}", lambda: dlpfc([sid], align=False)), 0, cfg,
                labels_key="layer", ssim=True)))
        for h, sid in ([(1, "151674")] if quick else [(1, "151674"), (2, "151675")]):
            out.append((f"dlpfc_sec_{sid}", lambda h=h: section_row(
                f"dlpfc_sec_{sid}", "DLPFC Visium", get("dlpfc", dlpfc), h, "pearson", cfg)))
    for p in "ABCD":
        if (SHARED / "her2st" / p).exists():
            for h in ([2] if quick else [1, 2, 3, 4]):
                out.append((f"her2st_{p}{h + 1}", lambda p=p, h=h: section_row(
                    f"her2st_{p}{h + 1}", f"HER2ST {p}", get(f"her2st_{p}", lambda: her2st(p)), h, "pearson", cfg)))
    # synthetic failure modes (known truth; measured counts as the held-out truth, like real data)
    zs20 = [20.0 * k for k in range(9)]
    out.append(("synth_outline", lambda: section_row(
        "synth_outline", "synthetic", get("so", lambda: synth_stack(_Tissue.outline(160.0), zs20, 60.0)), 4,
        "pearson", cfg)))
    out.append(("synth_zwave", lambda: section_row(
        "synth_zwave", "synthetic", get("sz", lambda: synth_stack(_Tissue.zwave(160.0, 60.0), zs20, 60.0)), 4,
        "pearson", cfg)))

    def sample(unit):
        from napari_inrst.synthetic.sample import SyntheticTissue

        return synth_stack(SyntheticTissue(n_genes=84, seed=0), [30.0 * k for k in range(10) if k not in (3, 7)],
                           50.0, unit=unit)

    out.append(("synth_um", lambda: section_row("synth_um", "synthetic", get("su", lambda: sample(1.0)), 3,
                                                "pearson", cfg)))
    out.append(("synth_array_units", lambda: section_row(
        "synth_array_units", "synthetic", get("sa", lambda: sample(50.0)), 3, "pearson", cfg)))

    def few():
        from napari_inrst.synthetic.sample import SyntheticTissue

        return synth_stack(SyntheticTissue(n_genes=84, seed=1), [100.0], 140.0, seed=1)

    out.append(("synth_few_spots", lambda: spots_row("synth_few_spots", "synthetic", get("sf", few), 0, cfg)))
    return out


def summarize(table: list[dict]) -> dict:
    if not table:
        return {}
    m = np.array([r["margin"] for r in table])
    worst = table[int(np.argmin(m))]
    return {"rows": len(table), "mean_field": round(float(np.mean([r["field"] for r in table])), 4),
            "mean_baseline": round(float(np.mean([r["baseline"] for r in table])), 4),
            "mean_margin": round(float(m.mean()), 4), "worst_row": worst["row"], "worst_margin": worst["margin"],
            "rows_field_below_baseline": int((m < 0).sum())}


def format_rows(table: list[dict]) -> str:
    head = ("| row | task | metric | field | best baseline | margin | blend w (interpolant) | fit s |\n"
            "|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in table:
        mix = r.get("blend_mix", {"knn": 0.0, "sections": 1.0}.get(r.get("blend_kind")))
        kind = ("" if mix is None else "kNN" if mix == 0 else "adjacent sections" if mix == 1
                else f"{1 - mix:.2f} kNN + {mix:.2f} adjacent")
        blend = f"{r.get('blend_weight', 0):.2f}" + (f" ({kind})" if kind and r.get("blend_weight", 0) > 0 else "")
        lines.append(f"| {r['row']} | {r['data']}: {r['task']} | {r['metric']} | {r['field']:.3f} | "
                     f"{r['baseline']:.3f} ({r['best_baseline']}) | {r['margin']:+.3f} | "
                     f"{blend} | {r['fit_seconds']:.0f} |")
    return "\n".join(lines)


def _label(enc: str) -> str:
    if not enc.startswith("{"):
        return enc
    d = json.loads(enc)
    return d.pop("name") + "(" + ",".join(f"{k}={v}" for k, v in d.items()) + ")"


def run(quick: bool = True) -> dict:
    want = [w.strip() for w in os.environ.get("GENERALIZE_ROWS", "").split(",") if w.strip()]
    out_path = os.environ.get("GENERALIZE_OUT")
    env = os.environ.get("GENERALIZE_ENCODINGS", "")
    encs = [e.strip() for e in env.split(";" if "{" in env else ",") if e.strip()] or [None]
    table, figs, cache = [], {}, {}
    per_enc = [rows(quick, e, cache) for e in encs]
    # each row once per encoding, side by side (a partial run still holds pairs)
    for name, e, thunk in [(n, e, t) for row in zip(*per_enc) for e, (n, t) in zip(encs, row)]:
        if want and not any(name.startswith(w) for w in want):
            continue
        name = name if e is None else f"{name}@{_label(e)}"
        t0 = time.perf_counter()
        try:
            r = thunk()
        except Exception as exc:  # noqa: BLE001 - one failing row must not hide the others
            figs[f"{name}.error"] = f"{type(exc).__name__}: {exc}"
            continue
        r["row"] = name
        r["row_seconds"] = round(time.perf_counter() - t0, 1)
        table.append(r)
        print(json.dumps(r), file=sys.stderr, flush=True)
        if out_path:
            with open(out_path, "a") as fh:
                fh.write(json.dumps(r) + "\n")
        for k in ("field", "baseline", "margin"):
            figs[f"{name}.{k}"] = r[k]
    figs.update({f"summary.{k}": v for k, v in summarize(table).items()})
    figs["table"] = format_rows(table)
    return figs


def table_from_files(paths) -> str:
    """The table and summary of rows saved in ``GENERALIZE_OUT`` files (the last run of a row wins)."""
    rows = {}
    for p in paths:
        for line in Path(p).read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                rows[r["row"]] = r
    table = list(rows.values())
    return format_rows(table) + "\n\n" + json.dumps(summarize(table))


if __name__ == "__main__":
    if "--table" in sys.argv:  # python benchmarks/bench_generalize.py --table a.jsonl b.jsonl
        print(table_from_files(sys.argv[sys.argv.index("--table") + 1:]))
        sys.exit(0)
    res = run(quick="--quick" in sys.argv)
    print(res.pop("table"))
    print(json.dumps(res, indent=1))
