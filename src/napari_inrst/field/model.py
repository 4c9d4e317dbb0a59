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
    ``knn2d`` of :mod:`napari_inrst.measure.baselines`), of their expression in a low-rank basis.

    ``xyz`` (n, 3) training coordinates (µm, in the network's frame: the stack frame less the
    field's ``origin``), ``coef`` (n, q) their centred (÷ std)
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

        from ..measure.baselines import EPS_UM

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
        origin = self.arch.get("origin")  # absent in models written before it (their frame is absolute)
        self._origin = None if origin is None else np.asarray(origin, dtype=np.float64)
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

    @property
    def origin(self) -> np.ndarray:
        """(3,) µm subtracted (in float64) from every point before the network sees it: code that
        calls ``net.latent`` directly (e.g. the alignment refinement) works in that frame."""
        return np.zeros(3) if self._origin is None else self._origin.copy()

    # --- ExpressionField ------------------------------------------------------------------
    def _net_input(self, xyz) -> np.ndarray:
        """Points (µm) → the network's float32 frame: the origin subtracted in float64 first."""
        if self._origin is None:
            return np.ascontiguousarray(xyz, dtype=np.float32)
        return (np.asarray(xyz, dtype=np.float64) - self._origin).astype(np.float32)

    def _clamped(self, xyz) -> np.ndarray:
        """Points beyond the field's bounds (+ 5 % of the extent) moved to the nearest point of that
        box: the field is not extrapolated (a far query gets the value at the edge, not a
        runaway value of the network's linear terms)."""
        xyz = np.asarray(xyz)
        lo, hi = self._bounds
        pad = 0.05 * (hi - lo) + 1e-6
        lo, hi = lo - pad, hi + pad
        if xyz.size and ((xyz < lo).any() or (xyz > hi).any()):
            return np.clip(np.asarray(xyz, dtype=np.float64), lo, hi)
        return xyz

    def _run(self, fn, xyz, chunk: int = 65536) -> np.ndarray:
        import torch

        xyz = np.asarray(xyz)
        if xyz.dtype not in (np.float32, np.float64):
            xyz = xyz.astype(np.float64)
        xyz = xyz.reshape(-1, 3)
        dev = self.device
        outs = []
        with torch.inference_mode():
            for s in range(0, max(len(xyz), 1), chunk):
                part = torch.from_numpy(self._net_input(xyz[s:s + chunk])).to(dev)
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
        # the interpolant's points are stored in the network's frame (the origin subtracted)
        pts = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        if self._origin is not None:
            pts = pts - self._origin
        return np.concatenate([lat, self.interp(pts)], axis=1)

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

    def predict(self, xyz, genes=None, *, masked: bool = False, clamp: bool = True) -> np.ndarray:
        """Expression at (n, 3) points for ``genes`` (names or indices; None = all) → (n, k) float32.

        ``masked=True`` sets points outside tissue (occupancy < 0.5) to NaN. ``clamp`` (default):
        points beyond the field's bounds (+ 5 % of its extent) take the value at the nearest point
        of that box — the field is not extrapolated; ``clamp=False`` evaluates the network there.
        """
        idx = self.gene_indices(genes)
        out = self.decode(self.latent(self._clamped(xyz) if clamp else xyz), idx)
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


#: sane limits for the numbers in ``arch`` (checked before anything is built from them)
_ARCH_INT_LIMITS = {"width": (1, 65536), "depth": (0, 256), "rank": (1, 65536), "n_genes": (1, 1_000_000),
                    "members": (1, 256), "hash_levels": (1, 64), "hash_features": (1, 64),
                    "hash_log2_table": (1, 30), "seed": (-2**63, 2**63 - 1)}


def _bad(path, what):
    raise InputError(path, f"model file is inconsistent: {what}")


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite_array(path, v, name, shape=None, *, allow_empty=False) -> np.ndarray:
    """``v`` as a finite float64 array (of ``shape`` where given), or InputError naming ``path``."""
    try:
        if isinstance(v, (str, bytes, dict)) or v is None:
            raise TypeError
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        _bad(path, f"'{name}' is not a list of numbers")
    if shape is not None and a.shape != tuple(shape):
        _bad(path, f"'{name}' has shape {a.shape}, expected {tuple(shape)}")
    if not allow_empty and a.size == 0:
        _bad(path, f"'{name}' is empty")
    if not np.isfinite(a).all():
        _bad(path, f"'{name}' holds NaN or infinite values")
    return a


def check_meta(meta, path) -> dict:
    """Validate the JSON metadata of a model file (types, shapes, finite numbers, limits) before
    anything is built from it. Every problem is an InputError naming ``path``."""
    if not isinstance(meta, dict):
        raise InputError(path, f"not a napari-inrst model file (metadata is a JSON {type(meta).__name__}, not an object)")
    if meta.get("format") != FORMAT:
        raise InputError(path, "not a napari-inrst model file")
    ver = meta.get("format_version", 0)
    if not (isinstance(ver, int) and not isinstance(ver, bool)) or ver < 0:
        _bad(path, f"format_version must be a whole number, got {ver!r}")
    if ver > FORMAT_VERSION:
        raise InputError(path, f"model format version {ver} is newer than this napari-inrst understands "
                               f"({FORMAT_VERSION}); update napari-inrst")
    for key, typ in (("genes", list), ("arch", dict), ("config", dict), ("stack_meta", dict)):
        if not isinstance(meta.get(key), typ):
            _bad(path, f"'{key}' must be a JSON {'list' if typ is list else 'object'}")
    genes = meta["genes"]
    if not genes or not all(isinstance(g, str) for g in genes):
        _bad(path, "'genes' must be a non-empty list of names")
    if len(set(genes)) != len(genes):
        _bad(path, "'genes' has duplicate names")
    g = len(genes)
    _finite_array(path, meta.get("mean"), "mean", (g,))
    std = _finite_array(path, meta.get("std"), "std", (g,))
    if (std <= 0).any():
        _bad(path, "'std' must be positive")
    b = _finite_array(path, meta.get("bounds"), "bounds", (2, 3))
    if (b[0] > b[1]).any():
        _bad(path, "'bounds' has a minimum above its maximum")
    if meta.get("normalize") not in ("log1p", "none"):
        _bad(path, f"'normalize' must be 'log1p' or 'none', got {meta.get('normalize')!r}")
    vf = meta.get("value_floor")
    if vf is not None and not (_is_num(vf) and np.isfinite(vf)):
        _bad(path, f"'value_floor' must be a number, got {vf!r}")
    for key, typ in (("provenance", dict), ("history", list)):
        if meta.get(key) is not None and not isinstance(meta[key], typ):
            _bad(path, f"'{key}' must be a JSON {'object' if typ is dict else 'list'}")
    sm = meta["stack_meta"]
    names = sm.get("names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        _bad(path, "'stack_meta.names' must be a list of names")
    if "z" in sm:
        _finite_array(path, sm["z"], "stack_meta.z", (len(names),) if names else None, allow_empty=True)
    if "transforms" in sm:
        mats = sm["transforms"]
        if not isinstance(mats, list) or (names and len(mats) != len(names)):
            _bad(path, "'stack_meta.transforms' must hold one 3×3 matrix per section")
        for k, m in enumerate(mats):
            _finite_array(path, m, f"stack_meta.transforms[{k}]", (3, 3))
    arch = meta["arch"]
    if arch.get("encoding") not in ("fourier", "hash"):
        _bad(path, f"'arch.encoding' must be 'fourier' or 'hash', got {arch.get('encoding')!r}")
    for key, (lo, hi) in _ARCH_INT_LIMITS.items():
        if key not in arch and key in ("members", "seed", "hash_levels", "hash_features", "hash_log2_table"):
            continue
        v = arch.get(key)
        if not (isinstance(v, int) and not isinstance(v, bool)) or not lo <= v <= hi:
            _bad(path, f"'arch.{key}' must be a whole number in {lo}…{hi}, got {v!r}")
    if arch["n_genes"] != g:
        _bad(path, f"'arch.n_genes' is {arch['n_genes']} but the file lists {g} genes")
    if arch["encoding"] == "fourier":
        _finite_array(path, arch.get("center"), "arch.center", (3,))
        ext = _finite_array(path, arch.get("extent"), "arch.extent", (3,))
        nf = _finite_array(path, arch.get("n_freq"), "arch.n_freq", (3,))
        wl = _finite_array(path, arch.get("min_wavelength"), "arch.min_wavelength", (3,))
        if (nf < 0).any() or (nf > 4096).any() or (nf != np.round(nf)).any():
            _bad(path, "'arch.n_freq' must be whole numbers in 0…4096")
        if (wl <= 0).any() or (ext < 0).any():
            _bad(path, "'arch.min_wavelength' must be positive and 'arch.extent' not negative")
    else:
        for key in ("lo", "hi", "hash_coarse", "hash_fine"):
            _finite_array(path, arch.get(key), f"arch.{key}", (3,))
        for key in ("hash_levels", "hash_features", "hash_log2_table"):
            if key not in arch:
                _bad(path, f"'arch.{key}' is missing")
        if (np.asarray(arch["hash_coarse"]) <= 0).any() or (np.asarray(arch["hash_fine"]) <= 0).any():
            _bad(path, "'arch.hash_coarse' and 'arch.hash_fine' must be positive")
    if "origin" in arch:
        _finite_array(path, arch["origin"], "arch.origin", (3,))
    return meta


def _interp_shapes(meta: dict, path) -> dict:
    """Shapes of the interpolant's tensors that ``meta["interp"]`` announces ({} without one);
    its fields checked first (weight in [0, 1], k ≥ 1, dims 2 or 3, whole n and q)."""
    m = meta.get("interp")
    if not m:
        return {}
    if not isinstance(m, dict):
        _bad(path, "'interp' must be a JSON object")
    try:
        w, k, dims, n, q = float(m["weight"]), m.get("k", 5), m.get("dims", 3), m["n"], m["q"]
    except (KeyError, TypeError, ValueError):
        _bad(path, "'interp' needs a numeric weight, n and q")
    if not (0.0 <= w <= 1.0):
        _bad(path, f"'interp.weight' must be in [0, 1], got {w!r}")
    for name, v in (("k", k), ("n", n), ("q", q)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            _bad(path, f"'interp.{name}' must be a whole number ≥ 1, got {v!r}")
    if dims not in (2, 3):
        _bad(path, f"'interp.dims' must be 2 or 3, got {dims!r}")
    return {"interp.xyz": (n, 3), "interp.coef": (n, q), "interp.basis": (len(meta["genes"]), q)}


def expected_shapes(arch: dict) -> dict:
    """Tensor name → shape of the network ``arch`` describes, computed on torch's meta device
    (no memory is allocated, whatever the sizes)."""
    import torch

    with torch.device("meta"):
        net = build_net(arch)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def load_model(path, device: str | None = "cpu") -> FieldModel:
    """Read a model file written by :meth:`FieldModel.save`. Never executes code from the file.

    The metadata is validated (:func:`check_meta`) and the tensor shapes the architecture asks
    for are compared with those in the safetensors header before the network is built, so a
    small file cannot make us allocate a large network. Corrupt, truncated, crafted or foreign
    files raise :class:`~napari_inrst.errors.InputError` naming the file.
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
            meta = json.loads(md["meta"])
            check_meta(meta, path)
            header = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
            try:
                want = expected_shapes(meta["arch"])
            except InputError:
                raise
            except Exception as exc:  # noqa: BLE001 - an arch our builder cannot make sense of
                reason = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
                _bad(path, f"'arch' describes no network ({reason})")
            want.update(_interp_shapes(meta, path))
            if set(want) != set(header):
                extra, missing = sorted(set(header) - set(want)), sorted(set(want) - set(header))
                _bad(path, f"tensors do not match 'arch' (unexpected: {', '.join(extra[:3]) or 'none'}; "
                           f"missing: {', '.join(missing[:3]) or 'none'})")
            for k, shape in want.items():
                if header[k] != shape:
                    _bad(path, f"tensor '{k}' has shape {header[k]} but 'arch' asks for {shape}")
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except InputError:
        raise
    except Exception as exc:  # safetensors/json errors: truncated, corrupt, foreign
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise InputError(path, f"not a readable napari-inrst model file ({reason})") from None
    try:
        config = FieldConfig.from_dict(meta["config"])
    except InputError as exc:  # the config's own message, with the file named
        raise InputError(path, f"model file has a bad config: {exc.problem}") from None
    except Exception as exc:  # noqa: BLE001 - wrong types in the config
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise InputError(path, f"model file has a bad config ({reason})") from None
    try:
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
