"""Field-driven fit of the per-section deformations (:mod:`napari_inrst.align.deform`), used by
``fit --deform`` through :func:`napari_inrst.field.refine.refine_stack`.

:func:`deform_sections` optimizes the grids of the listed sections through a frozen field's latent
and gene decoder (torch), as the refinement optimizes rigid parameters: the error of the field at
the section's cells (target space) plus ``smooth`` × bending ÷ bound², the control displacements
``bound · tanh(raw)`` (so the bound holds); transforms unchanged; per section the best step is kept,
and a grid whose loss did not go down is left as it was. torch is imported inside.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..align.deform import Deformation, bending

#: Adam steps of the grid optimization per round
STEPS = 60
LR = 0.05
#: weight of bending ÷ bound² against the field's error (target space)
SMOOTH = 0.02
MAX_CELLS = 2500


def deform_sections(model, stack, sections: Sequence[int], *, steps: int = STEPS, lr: float = LR,
                    smooth: float = SMOOTH, max_cells: int = MAX_CELLS, seed: int = 0) -> tuple[list, list, list]:
    """Optimize the deformation grids of ``stack.sections[k] for k in sections`` (their current
    grid, or a zero one) against the frozen field ``model``; transforms unchanged. Returns
    ``(grids, loss_before, loss_after)`` per listed section."""
    import torch

    sections = list(sections)
    if not sections:
        return [], [], []
    rng = np.random.default_rng(seed)
    net, dev, o = model.net, model.device, model.origin
    was = [p.requires_grad for p in net.parameters()]
    for p in net.parameters():
        p.requires_grad_(False)
    f32 = {"dtype": torch.float32, "device": dev}
    items, raws = [], []
    for k in sections:
        s = stack.sections[k]
        g = getattr(s, "deformation", None) or Deformation.for_points(s.xy_input)
        r = np.arange(s.n_obs) if s.n_obs <= max_cells else np.sort(rng.choice(s.n_obs, max_cells, replace=False))
        x = s.xy_input[r]
        X = np.asarray(s.X[r], dtype=np.float32)
        wts, idx = g.basis(x)
        M = np.asarray(s.transform, dtype=np.float64)
        m = max(g.max_disp_um, 1e-9)
        c = x.mean(axis=0)  # points centred (float32), the centroid's place in the translation
        items.append({"grid": g, "m": m, "x": torch.as_tensor(x - c, **f32), "w": torch.as_tensor(wts, **f32),
                      "idx": torch.as_tensor(idx, dtype=torch.long, device=dev), "A": torch.as_tensor(M[:2, :2], **f32),
                      "t": torch.as_tensor(M[:2, :2] @ c + M[:2, 2] - o[:2], **f32),
                      "z": torch.full((len(x), 1), float(s.z - o[2]), **f32),
                      "T": torch.as_tensor((X - model.mean) / model.std, **f32)})
        raws.append(torch.as_tensor(np.arctanh(np.clip(g.coef / m, -0.999, 0.999)), **f32).requires_grad_(True))

    def losses():
        out = []
        for it, raw in zip(items, raws):
            c = it["m"] * torch.tanh(raw)
            disp = (it["w"][..., None] * c.reshape(-1, 2)[it["idx"]]).sum(1)
            xy = (it["x"] + disp) @ it["A"].T + it["t"]
            pred = net.decoder(net.latent(torch.cat([xy, it["z"]], dim=1)))
            out.append(((pred - it["T"]) ** 2).mean() + smooth * bending(c) / it["m"] ** 2)
        return torch.stack(out)

    opt = torch.optim.Adam(raws, lr=lr)
    try:
        with torch.no_grad():
            before = losses().cpu().numpy().astype(float)
        best = before.copy()
        best_raw = [r.detach().clone() for r in raws]
        for i in range(int(steps) + 1):
            for gr in opt.param_groups:
                gr["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * i / max(steps, 1))))
            opt.zero_grad(set_to_none=True)
            L = losses()
            cur = L.detach().cpu().numpy().astype(float)
            for j in np.flatnonzero(cur < best):
                best[j], best_raw[j] = cur[j], raws[j].detach().clone()
            if i == int(steps):
                break
            L.sum().backward()
            opt.step()
    finally:
        for p, w in zip(net.parameters(), was):
            p.requires_grad_(w)
    grids = []
    for j, it in enumerate(items):
        g = it["grid"]
        if not best[j] < before[j]:
            grids.append(g)
            continue
        c = it["m"] * np.tanh(best_raw[j].cpu().numpy().astype(np.float64))
        grids.append(Deformation(g.origin, g.spacing, c, g.max_disp_um, g.enabled))
    return grids, list(before), list(best)
