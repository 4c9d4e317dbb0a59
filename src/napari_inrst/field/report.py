"""What a trained field says about itself: its validation against interpolation, in words.

Every fit scores itself on a split that mimics its task (whole interior sections held out for a
stack of three or more sections, held-out spots otherwise; see :mod:`.fit`) together with the
interpolation baselines of that task (3D kNN and adjacent sections for a stack, 2D kNN for one
section) on the same split. The
report lives in the model file (``meta["validation"]``); these functions turn it into the lines
the CLI (``fit``, ``info``) and the Train widget show. No torch, no Qt.
"""

from __future__ import annotations

BASELINE_NAMES = {"knn3d": "3D kNN", "knn2d": "2D kNN"}


def format_validation(v: dict | None) -> str:
    """One line, e.g. ``held-out sections (s2): field 0.41, interpolation 0.33 (3D kNN)``."""
    if not v:
        return "no validation report (model written by an earlier version)"
    secs = v.get("sections") or []
    where = f" ({', '.join(secs)})" if secs else f" ({v.get('n_cells', '?')} spots)"
    base = BASELINE_NAMES.get(v.get("baseline"), v.get("baseline", "interpolation"))
    line = (f"{v.get('task', 'validation')}{where}: field {v['field']:.2f}, "
            f"interpolation {v['interpolation']:.2f} ({base})")
    if v.get("interpolation_sections") is not None:
        line += f", {v['interpolation_sections']:.2f} (adjacent sections)"
    w = float(v.get("blend_weight", 0.0))
    mix = float(v.get("blend_mix", 0.0))
    which = ("" if mix == 0 else " (adjacent sections)" if mix == 1
             else f" ({1 - mix:.2f} × 3D kNN + {mix:.2f} × adjacent sections)")
    if 0.0 < w < 1.0:
        line += f"; field = {1 - w:.2f} × network + {w:.2f} × interpolation{which}"
    elif w >= 1.0:
        line += f"; the field is the interpolation{which} (the network did not help)"
    return line


def best_interpolation(v: dict) -> float:
    """The best interpolation score of a validation report (3D/2D kNN, adjacent sections)."""
    scores = [v.get("interpolation"), v.get("interpolation_sections")]
    return max(float(x) for x in scores if x is not None)


def validation_warning(v: dict | None) -> str | None:
    """A plain warning when the field is not better than interpolation on its validation, else None."""
    if not v:
        return None
    if not v.get("better", False) or float(v.get("blend_weight", 0.0)) >= 1.0:
        return (f"the field is not better than interpolation on {v.get('task', 'its validation')} "
                f"({v['field']:.3f} vs {best_interpolation(v):.3f}): do not trust it beyond what "
                "interpolating the measured data gives")
    return None


def describe(meta: dict, n_genes_shown: int = 8) -> str:
    """``napari-inrst info``: genes, sections with z, config, validation against interpolation,
    from a model file's metadata (``FieldModel.meta()``)."""
    genes = list(meta.get("genes", []))
    sm = meta.get("stack_meta", {}) or {}
    cfg = meta.get("config", {}) or {}
    prov = meta.get("provenance", {}) or {}
    names, zs = sm.get("names", []), sm.get("z", [])
    trained = set(sm.get("training_sections", range(len(names))))
    lines = [f"genes: {len(genes)} ({', '.join(genes[:n_genes_shown])}{', …' if len(genes) > n_genes_shown else ''})",
             f"values: {meta.get('normalize', '?')}",
             f"sections: {len(names)}"]
    for i, (n, z) in enumerate(zip(names, zs)):
        lines.append(f"  {n}  z = {float(z):g} µm{'' if i in trained else '  (not trained on)'}")
    sp = sm.get("spot_spacing_um")
    zsp = sm.get("z_spacing_um")
    geo = f"spot spacing {sp:.3g} µm" if isinstance(sp, (int, float)) else "spot spacing ?"
    if isinstance(zsp, (int, float)):
        geo += f", section spacing {zsp:.3g} µm"
    lines.append(f"geometry: {geo}, {sm.get('n_cells', '?')} cells/spots")
    members = (meta.get("model", {}) or {}).get("members", 1)
    enc = cfg.get("encoding") or {}
    enc = enc if isinstance(enc, dict) else {"name": enc}
    # the recipe's settings, with the encoding's own (nested) among them
    flat = {**cfg, **{k: v for k, v in enc.items() if v is not None}, "encoding": enc.get("name", "?")}
    keys = ("encoding", "width", "depth", "rank", "steps", "min_wavelength_xy_um", "min_wavelength_z_um",
            "finest_um", "finest_z_um", "standardize", "lambda_kl", "lambda_rc", "seed")
    lines.append("config: " + ", ".join(f"{k}={flat[k]}" for k in keys if k in flat)
                 + (f", members={members}" if members > 1 else ""))
    if prov:
        fs = prov.get("fit_seconds")
        lines.append(f"fit: {prov.get('steps_run', '?')} steps"
                     + (f", {fs:.0f} s" if isinstance(fs, (int, float)) else "")
                     + f" on {prov.get('device', '?')}, napari-inrst {prov.get('napari_inrst', '?')}")
    v = meta.get("validation")
    lines.append("validation: " + format_validation(v))
    if v and v.get("network") is not None:
        lines.append(f"  network alone {v['network']:.3f}; {v.get('metric', '')}")
    w = validation_warning(v)
    if w:
        lines.append("warning: " + w)
    return "\n".join(lines)
