"""The field network and the trained :class:`FieldModel` (an :class:`~.api.ExpressionField`).

Network: encoding (Fourier or hash grid) → trunk MLP → low-rank latent (r) → linear gene
decoder (initialised from PCA of the training data), plus a tissue-occupancy head on the last
trunk layer. One gene renders at trunk cost + one dot product: :meth:`FieldModel.latent` runs the
trunk once, :meth:`FieldModel.decode` is a small numpy matrix product.

torch is imported lazily by the functions that need it, except in :func:`build_net`'s callers.
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np

from ..errors import InputError
from .config import FieldConfig

FORMAT = "napari-inrst-field"
FORMAT_VERSION = 2  # 2: optional interpolant tensors ("interp.*") and meta["interp"], meta["validation"]
INTERP_KEYS = ("interp.xyz", "interp.coef", "interp.basis")


class Interpolant:
    """The local interpolant a field is blended with: inverse-distance weighted mean of the ``k``
    nearest training cells/spots (3D, or 2D in x, y for one section: the baselines ``knn3d`` and
    ``knn2d`` of :mod:`napari_inrst.evaluate.baselines`), of their expression in a low-rank basis.

    ``xyz`` (n, 3) training coordinates (µm, stack frame), ``coef`` (n, q) their centred (÷ std)
    expression in the orthonormal gene basis ``basis`` (genes × q), ``weight`` w ∈ [0, 1]: the
    model predicts (1 − w) · network + w · interpolant. Both parts are linear in a latent, so the
    blend is one latent (the network's r features, then the interpolant's q) and one linear
    decoder: rendering, caching and gene switching work unchanged.
    """

    def __init__(self, xyz, coef, basis, weight: float, k: int = 5, dims: int = 3):
        self.xyz = np.ascontiguousarray(xyz, dtype=np.float32)
        self.coef = np.ascontiguousarray(coef, dtype=np.float32)
        self.basis = np.ascontiguousarray(basis, dtype=np.float32)
        self.weight = float(weight)
        self.k = int(k)
        self.dims = int(dims)
        self._tree = None

    @property
    def q(self) -> int:
        return int(self.coef.shape[1])

    def __call__(self, xyz) -> np.ndarray:
        """(m, 3) points → (m, q) interpolated coefficients."""
        from scipy.spatial import cKDTree

        from ..evaluate.baselines import EPS_UM

        xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        if len(xyz) == 0:
            return np.zeros((0, self.q), dtype=np.float32)
        if self._tree is None:
            self._tree = cKDTree(self.xyz[:, :self.dims].astype(np.float64))
        k = int(min(self.k, len(self.xyz)))
        d, idx = self._tree.query(xyz[:, :self.dims], k=k)
        d = d.reshape(len(xyz), k)
        idx = idx.reshape(len(xyz), k)
        w = 1.0 / np.maximum(d, EPS_UM)
        w /= w.sum(axis=1, keepdims=True)
        out = np.zeros((len(xyz), self.q), dtype=np.float32)
        for j in range(k):
            out += w[:, j:j + 1].astype(np.float32) * self.coef[idx[:, j]]
        return out

    def tensors(self) -> dict:
        import torch

        return {"interp.xyz": torch.from_numpy(self.xyz), "interp.coef": torch.from_numpy(self.coef),
                "interp.basis": torch.from_numpy(self.basis)}

    def meta(self) -> dict:
        return {"weight": self.weight, "k": self.k, "dims": self.dims, "n": int(len(self.xyz)), "q": self.q}


def build_net(arch: dict):
    """Build the torch network described by ``arch`` (a plain dict saved with the model)."""
    import torch
    from torch import nn

    from .encodings import FourierEncoding, HashGridEncoding

    class FieldNet(nn.Module):
        def __init__(self, arch):
            super().__init__()
            if arch["encoding"] == "fourier":
                self.enc = FourierEncoding(arch["center"], arch["extent"], arch["n_freq"], arch["min_wavelength"])
            else:
                self.enc = HashGridEncoding(arch["lo"], arch["hi"], arch["hash_coarse"], arch["hash_fine"],
                                            arch["hash_levels"], arch["hash_features"], arch["hash_log2_table"],
                                            seed=arch.get("seed", 0))
            layers, d = [], self.enc.n_out
            for _ in range(int(arch["depth"])):
                layers += [nn.Linear(d, int(arch["width"])), nn.SiLU()]
                d = int(arch["width"])
            self.trunk = nn.Sequential(*layers)
            self.to_latent = nn.Linear(d, int(arch["rank"]))
            self.decoder = nn.Linear(int(arch["rank"]), int(arch["n_genes"]))
            self.occ = nn.Sequential(nn.Linear(self.enc.n_out, 32), nn.SiLU(), nn.Linear(32, 1))

        def latent(self, xyz):
            e = self.enc(xyz)
            return self.to_latent(self.trunk(e))

        def forward(self, xyz, occ_xyz=None, decode: bool = True):
            """→ (latent, expression in target space (centred, ÷ std) or None, occupancy logit at ``occ_xyz`` or else at
            ``xyz``). One call covers every output a training step needs (what
            DistributedDataParallel wraps); ``decode=False`` skips the genes (projected targets).
            """
            e = self.enc(xyz)
            lat = self.to_latent(self.trunk(e))
            occ = self.occ(e if occ_xyz is None else self.enc(occ_xyz)).squeeze(-1)
            return lat, (self.decoder(lat) if decode else None), occ

        def occupancy_logit(self, xyz):
            return self.occ(self.enc(xyz)).squeeze(-1)

    class EnsembleNet(nn.Module):
        """K fields averaged: latent = the members' latents side by side, decoder = their decoders / K
        (so it is still one linear decoder), occupancy = mean logit."""

        def __init__(self, arch, k):
            super().__init__()
            self.members = nn.ModuleList([FieldNet(arch) for _ in range(k)])
            self.decoder = nn.Linear(k * int(arch["rank"]), int(arch["n_genes"]))

        def combine(self):
            """Set the joint decoder from the members' decoders (after training)."""
            k = len(self.members)
            with torch.no_grad():
                self.decoder.weight.copy_(torch.cat([m.decoder.weight for m in self.members], dim=1) / k)
                self.decoder.bias.copy_(torch.stack([m.decoder.bias for m in self.members]).mean(0))
            return self

        def latent(self, xyz):
            return torch.cat([m.latent(xyz) for m in self.members], dim=-1)

        def forward(self, xyz, occ_xyz=None, decode: bool = True):
            lat = self.latent(xyz)
            occ = self.occupancy_logit(xyz if occ_xyz is None else occ_xyz)
            return lat, (self.decoder(lat) if decode else None), occ

        def occupancy_logit(self, xyz):
            return torch.stack([m.occupancy_logit(xyz) for m in self.members]).mean(0)

    torch.manual_seed(int(arch.get("seed", 0)))
    k = int(arch.get("members", 1))
    return EnsembleNet(arch, k) if k > 1 else FieldNet(arch)


class FieldModel:
    """A trained expression field: numpy in, numpy out; coordinates (x, y, z) in µm, stack frame.

    Attributes: ``genes``, ``normalize`` (the value space of predictions), ``stack_meta``
    (section names, z, transforms, sources), ``config`` (:class:`FieldConfig`, resolved),
    ``arch`` (network shape), ``provenance``, ``history`` (losses and validation per step),
    ``interp`` (the :class:`Interpolant` blended in, or None), ``validation`` (the fit's report on
    its task-mimicking validation split: field vs interpolation, see :mod:`.report`).
    """

    def __init__(self, net, *, genes, mean, std, arch, config: FieldConfig, normalize: str,
                 stack_meta: dict, bounds, provenance: dict | None = None, history: list | None = None,
                 value_floor: float | None = None, interp: Interpolant | None = None,
                 validation: dict | None = None):
        self.net = net.eval()
        self.interp = interp if interp is not None and interp.weight > 0 else None
        self.validation = dict(validation or {})
        self.genes = list(genes)
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.arch = dict(arch)
        self.config = config
        self.normalize = normalize
        self.stack_meta = dict(stack_meta)
        self._bounds = (np.asarray(bounds[0], dtype=np.float64), np.asarray(bounds[1], dtype=np.float64))
        self.provenance = dict(provenance or {})
        self.history = list(history or [])
        self.value_floor = value_floor
        self._gene_pos = {g: i for i, g in enumerate(self.genes)}
        self._refresh_decoder()

    # --- decoder in numpy -----------------------------------------------------------------
    def _refresh_decoder(self):
        W = self.net.decoder.weight.detach().float().cpu().numpy()  # (G, r)
        b = self.net.decoder.bias.detach().float().cpu().numpy()
        ip = self.interp
        if ip is None:
            self._W = np.ascontiguousarray((W * self.std[:, None]).T.astype(np.float32))  # (r, G)
            self._b = (b * self.std + self.mean).astype(np.float32)
        else:  # (1 − w) · network + w · interpolant, one decoder over both latents
            w = ip.weight
            Wn = (1.0 - w) * W * self.std[:, None]
            Wi = w * ip.basis.astype(np.float64) * self.std[:, None]
            self._W = np.ascontiguousarray(np.concatenate([Wn, Wi], axis=1).T.astype(np.float32))  # (r + q, G)
            self._b = ((1.0 - w) * b * self.std + self.mean).astype(np.float32)

    @property
    def rank(self) -> int:
        return int(self._W.shape[0])

    @property
    def blend_weight(self) -> float:
        """w of (1 − w) · network + w · interpolant (0: the network alone)."""
        return 0.0 if self.interp is None else float(self.interp.weight)

    @property
    def device(self):
        return next(self.net.parameters()).device

    def to(self, device) -> "FieldModel":
        self.net.to(device)
        return self

    def gene_indices(self, genes) -> list[int]:
        if genes is None:
            return list(range(len(self.genes)))
        out = []
        for g in ([genes] if isinstance(genes, (str, int, np.integer)) else genes):
            if isinstance(g, (int, np.integer)):
                if not 0 <= int(g) < len(self.genes):
                    raise KeyError(f"gene index {g} out of range (0..{len(self.genes) - 1})")
                out.append(int(g))
            else:
                try:
                    out.append(self._gene_pos[str(g)])
                except KeyError:
                    raise KeyError(f"gene '{g}' is not modeled by this field ({len(self.genes)} genes)") from None
        return out

    # --- ExpressionField ------------------------------------------------------------------
    def _run(self, fn, xyz, chunk: int = 65536) -> np.ndarray:
        import torch

        xyz = np.asarray(xyz, dtype=np.float32).reshape(-1, 3)
        dev = self.device
        outs = []
        with torch.inference_mode():
            for s in range(0, max(len(xyz), 1), chunk):
                part = torch.from_numpy(np.ascontiguousarray(xyz[s:s + chunk])).to(dev)
                if len(part) == 0:
                    break
                outs.append(fn(part).float().cpu().numpy())
        if not outs:
            return np.zeros((0,) if fn is self.net.occupancy_logit else (0, self.rank), dtype=np.float32)
        return np.concatenate(outs, axis=0)

    def latent(self, xyz) -> np.ndarray:
        """(n, 3) points (µm) → (n, r) float32 latent features (the network's, then the
        interpolant's when the field is blended with one)."""
        lat = self._run(self.net.latent, xyz).astype(np.float32, copy=False)
        if self.interp is None:
            return lat
        return np.concatenate([lat, self.interp(np.asarray(xyz, dtype=np.float64).reshape(-1, 3))], axis=1)

    def decode(self, latent, genes: Sequence[int] | None = None) -> np.ndarray:
        """(n, r) latent → (n, len(genes)) float32 expression (gene indices; None = all)."""
        lat = np.asarray(latent, dtype=np.float32)
        if genes is None:
            out = lat @ self._W + self._b
        else:
            idx = np.asarray(list(genes), dtype=np.int64)
            out = lat @ self._W[:, idx] + self._b[idx]
        if self.value_floor is not None:
            np.maximum(out, self.value_floor, out=out)
        return out.astype(np.float32, copy=False)

    def occupancy(self, xyz) -> np.ndarray:
        """(n, 3) points → (n,) probability of lying in tissue."""
        logit = self._run(self.net.occupancy_logit, xyz)
        return (1.0 / (1.0 + np.exp(-np.clip(logit, -60, 60)))).astype(np.float32)

    def bounds(self):
        return self._bounds[0].copy(), self._bounds[1].copy()

    def predict(self, xyz, genes=None, *, masked: bool = False) -> np.ndarray:
        """Expression at (n, 3) points for ``genes`` (names or indices; None = all) → (n, k) float32.

        ``masked=True`` sets points outside tissue (occupancy < 0.5) to NaN.
        """
        idx = self.gene_indices(genes)
        out = self.decode(self.latent(xyz), idx)
        if masked:
            out[self.occupancy(xyz) < 0.5] = np.nan
        return out

    # --- persistence ----------------------------------------------------------------------
    def meta(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "genes": self.genes,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "arch": self.arch,
            "config": self.config.to_dict(),
            "normalize": self.normalize,
            "stack_meta": self.stack_meta,
            "bounds": [self._bounds[0].tolist(), self._bounds[1].tolist()],
            "provenance": self.provenance,
            "history": self.history[-2000:],
            "value_floor": self.value_floor,
            "interp": self.interp.meta() if self.interp is not None else None,
            "validation": self.validation,
        }

    def save(self, path):
        """Write one file (safetensors weights + JSON metadata); atomic."""
        from safetensors.torch import save_file

        from ..io.atomic import atomic_path

        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        if self.interp is not None:
            state.update(self.interp.tensors())
        meta = {"format": FORMAT, "meta": json.dumps(_jsonable(self.meta()))}
        with atomic_path(path) as tmp:
            save_file(state, str(tmp), metadata=meta)
        return path

    def transforms(self) -> list[dict]:
        """``[{"section": name, "matrix": 3×3}]`` in input order (stack frame)."""
        names = self.stack_meta.get("names", [])
        mats = self.stack_meta.get("transforms", [])
        return [{"section": n, "matrix": [[float(v) for v in row] for row in m]} for n, m in zip(names, mats)]

    def __repr__(self):
        return (f"FieldModel({len(self.genes)} genes, rank {self.rank}, {self.arch.get('encoding')} encoding, "
                f"{len(self.stack_meta.get('names', []))} sections)")


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    return obj


def load_model(path, device: str | None = "cpu") -> FieldModel:
    """Read a model file written by :meth:`FieldModel.save`. Never executes code from the file.

    Corrupt, truncated or foreign files raise :class:`~napari_inrst.errors.InputError`.
    """
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        raise InputError(path, "model file not found")
    if path.is_dir():
        raise InputError(path, "is a folder, not a model file")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as fh:
            md = fh.metadata() or {}
            if md.get("format") != FORMAT:
                raise InputError(path, "not a napari-inrst model file (no napari-inrst header)")
            state = {k: fh.get_tensor(k) for k in fh.keys()}
        meta = json.loads(md["meta"])
    except InputError:
        raise
    except Exception as exc:  # safetensors/json errors: truncated, corrupt, foreign
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise InputError(path, f"not a readable napari-inrst model file ({reason})") from None
    if meta.get("format") != FORMAT:
        raise InputError(path, "not a napari-inrst model file")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise InputError(path, f"model format version {meta.get('format_version')} is newer than this "
                               f"napari-inrst understands ({FORMAT_VERSION}); update napari-inrst")
    try:
        config = FieldConfig.from_dict(meta["config"])
        net = build_net(meta["arch"])
        it = {k: state.pop(k) for k in INTERP_KEYS if k in state}
        interp = None
        if meta.get("interp"):
            m = meta["interp"]
            interp = Interpolant(it["interp.xyz"].numpy(), it["interp.coef"].numpy(), it["interp.basis"].numpy(),
                                 float(m["weight"]), int(m.get("k", 5)), int(m.get("dims", 3)))
        net.load_state_dict(state, strict=True)
        model = FieldModel(net, genes=meta["genes"], mean=meta["mean"], std=meta["std"], arch=meta["arch"],
                           config=config, normalize=meta["normalize"], stack_meta=meta["stack_meta"],
                           bounds=meta["bounds"], provenance=meta.get("provenance"),
                           history=meta.get("history"), value_floor=meta.get("value_floor"),
                           interp=interp, validation=meta.get("validation"))
    except InputError:
        raise
    except Exception as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise InputError(path, f"model file is inconsistent ({reason})") from None
    if device not in (None, "cpu"):
        model.to(device)
    return model
