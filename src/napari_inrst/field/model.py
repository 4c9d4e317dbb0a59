"""The trained :class:`FieldModel` (an :class:`~.api.ExpressionField`) and its file.

Network (:mod:`.networks`, described by a :class:`~.spec.ModelConfig`): encoding → trunk MLP →
low-rank latent (r) → linear gene decoder, plus a tissue-occupancy head. One gene renders at
trunk cost + one dot product: :meth:`FieldModel.latent` runs the trunk once,
:meth:`FieldModel.decode` is a small numpy matrix product. torch is imported by the methods that
run or write the network.
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np

from ..errors import InputError
from .config import FieldConfig
from .interpolant import Interpolant
from .modelfile import FORMAT, FORMAT_VERSION, _bad, _reason, check_meta, expected_shapes, model_config
from .spec import ModelConfig

#: named groups of tensors stored beside the network: ``<name>.<tensor>`` in the file, the
#: group's ``meta()`` in ``meta[<name>]``. A group class has ``tensors()`` (numpy by short name),
#: ``meta()``, ``shapes(meta, n_genes, bad)`` and ``from_tensors(tensors, meta)``; adding one is
#: a class and a line here (a model carries it in ``FieldModel.extras``, or ``interp``).
TENSOR_GROUPS = {"interp": Interpolant}


class FieldModel:
    """A trained expression field: numpy in, numpy out; coordinates (x, y, z) in µm, stack frame.

    Attributes: ``genes``, ``normalize`` (the value space of predictions), ``stack_meta``
    (section names, z, transforms, sources), ``config`` (:class:`FieldConfig`, the recipe, resolved),
    ``spec`` (:class:`~.spec.ModelConfig`: the network), ``provenance``, ``history`` (losses and validation per step),
    ``interp`` (the :class:`Interpolant` blended in, or None), ``validation`` (the fit's report on
    its task-mimicking validation split: field vs interpolation, see :mod:`.report`), ``extras``
    (further named tensor groups, see :data:`TENSOR_GROUPS`).
    """

    def __init__(self, net, *, genes, mean, std, spec: ModelConfig, config: FieldConfig, normalize: str,
                 stack_meta: dict, bounds, provenance: dict | None = None, history: list | None = None,
                 value_floor: float | None = None, interp: Interpolant | None = None,
                 validation: dict | None = None, extras: dict | None = None):
        self.net = net.eval()
        self.interp = interp if interp is not None and interp.weight > 0 else None
        self.validation = dict(validation or {})
        self.genes = list(genes)
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.spec = spec
        self.extras = dict(extras or {})  # name → tensor group (beside "interp")
        self.config = config
        self.normalize = normalize
        self.stack_meta = dict(stack_meta)
        self._bounds = (np.asarray(bounds[0], dtype=np.float64), np.asarray(bounds[1], dtype=np.float64))
        self.provenance = dict(provenance or {})
        self.history = list(history or [])
        self.value_floor = value_floor
        origin = spec.origin  # None in models written before it (their frame is absolute)
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
        """Gene names or indices (one or several; None = all) → positions; KeyError naming an
        unknown gene (with similar names) or an index out of range."""
        from ..stack import gene_positions

        return list(range(len(self.genes))) if genes is None else gene_positions(self.genes, genes)

    @property
    def origin(self) -> np.ndarray:
        """(3,) µm subtracted (in float64) from every point before the network sees it: code that
        calls ``net.latent`` directly (e.g. the alignment refinement) works in that frame."""
        return np.zeros(3) if self._origin is None else self._origin.copy()

    def detail_um(self) -> tuple[float, float]:
        """(x/y, z) finest length in µm the network represents (the renderer samples at it)."""
        return self.spec.detail_um()

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
    def groups(self) -> dict:
        """The named tensor groups stored beside the network (``interp`` and ``extras``)."""
        g = dict(self.extras)
        if self.interp is not None:
            g["interp"] = self.interp
        return g

    def meta(self) -> dict:
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "genes": self.genes,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "model": self.spec.to_dict(),
            "config": self.config.to_dict(),
            "normalize": self.normalize,
            "stack_meta": self.stack_meta,
            "bounds": [self._bounds[0].tolist(), self._bounds[1].tolist()],
            "provenance": self.provenance,
            "history": self.history[-2000:],
            "value_floor": self.value_floor,
            "interp": None,
            "validation": self.validation,
        }
        meta.update({name: grp.meta() for name, grp in self.groups().items()})
        return meta

    def save(self, path):
        """Write one file (safetensors weights + JSON metadata); atomic."""
        import torch
        from safetensors.torch import save_file

        from ..io.atomic import atomic_path

        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        for name, grp in self.groups().items():
            state.update({f"{name}.{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in grp.tensors().items()})
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
        return (f"FieldModel({len(self.genes)} genes, rank {self.rank}, {self.spec.encoding.name} encoding, "
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


def _group_shapes(meta: dict, path) -> dict:
    """Full tensor name → shape of every tensor group ``meta`` announces."""
    out = {}
    for name, cls in TENSOR_GROUPS.items():
        if meta.get(name):
            shapes = cls.shapes(meta[name], len(meta["genes"]), lambda what: _bad(path, what))
            out.update({f"{name}.{k}": v for k, v in shapes.items()})
    return out


def _read(path):
    """(upgraded, checked metadata; tensors) of a model file, shapes checked against its
    ModelConfig before any network is built."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as fh:
        md = fh.metadata() or {}
        if md.get("format") != FORMAT:
            raise InputError(path, "not a napari-inrst model file (no napari-inrst header)")
        meta = check_meta(json.loads(md["meta"]), path)
        header = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
        try:
            want = expected_shapes(model_config(meta, path))
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - a model our builder cannot make sense of
            _bad(path, f"'model' describes no network ({_reason(exc)})")
        want.update(_group_shapes(meta, path))
        if set(want) != set(header):
            extra, missing = sorted(set(header) - set(want)), sorted(set(want) - set(header))
            _bad(path, f"tensors do not match 'model' (unexpected: {', '.join(extra[:3]) or 'none'}; "
                       f"missing: {', '.join(missing[:3]) or 'none'})")
        for k, shape in want.items():
            if header[k] != shape:
                _bad(path, f"tensor '{k}' has shape {header[k]} but 'model' asks for {shape}")
        return meta, {k: fh.get_tensor(k) for k in fh.keys()}


def load_model(path, device: str | None = "cpu") -> FieldModel:
    """Read a model file written by :meth:`FieldModel.save` (any format version up to the
    current one: older metadata is upgraded, :func:`~.modelfile.upgrade`). Never executes code
    from the file.

    The metadata is validated (:func:`~.modelfile.check_meta`) and the tensor shapes the
    ModelConfig asks for are compared with those in the safetensors header before the network is
    built, so a small file cannot make us allocate a large network. Corrupt, truncated, crafted
    or foreign files raise :class:`~napari_inrst.errors.InputError` naming the file.
    """
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        raise InputError(path, "model file not found")
    if path.is_dir():
        raise InputError(path, "is a folder, not a model file")
    try:
        meta, state = _read(path)
    except InputError:
        raise
    except Exception as exc:  # safetensors/json errors: truncated, corrupt, foreign
        raise InputError(path, f"not a readable napari-inrst model file ({_reason(exc)})") from None
    try:
        config = FieldConfig.from_dict(meta["config"])
    except InputError as exc:  # the config's own message, with the file named
        raise InputError(path, f"model file has a bad config: {exc.problem}") from None
    except Exception as exc:  # noqa: BLE001 - wrong types in the config
        raise InputError(path, f"model file has a bad config ({_reason(exc)})") from None
    try:
        spec = model_config(meta, path)
        net = spec.build()
        groups = {}
        for name, cls in TENSOR_GROUPS.items():
            t = {k[len(name) + 1:]: state.pop(k).numpy() for k in list(state) if k.startswith(name + ".")}
            if meta.get(name):
                groups[name] = cls.from_tensors(t, meta[name])
        net.load_state_dict(state, strict=True)
        interp = groups.pop("interp", None)
        model = FieldModel(net, genes=meta["genes"], mean=meta["mean"], std=meta["std"], spec=spec,
                           config=config, normalize=meta["normalize"], stack_meta=meta["stack_meta"],
                           bounds=meta["bounds"], provenance=meta.get("provenance"),
                           history=meta.get("history"), value_floor=meta.get("value_floor"),
                           interp=interp, validation=meta.get("validation"), extras=groups)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(path, f"model file is inconsistent ({_reason(exc)})") from None
    if device not in (None, "cpu"):
        model.to(device)
    return model
