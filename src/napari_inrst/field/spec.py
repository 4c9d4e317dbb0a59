""":class:`ModelConfig` — the one description of a field network (stored in the model file as
``meta["model"]``): its resolved encoding, trunk, latent rank, genes, ensemble members, seed
and the origin of its frame. :meth:`ModelConfig.build` makes the torch network
(:mod:`.networks`); :meth:`ModelConfig.for_data` makes it from a fit recipe
(:class:`~.config.FieldConfig`) and the training data. No torch at import.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .encodings import Encoding
from .encodings import from_dict as encoding_from_dict

#: sane limits for the whole numbers (checked before anything is built from a file)
INT_LIMITS = {"width": (1, 65536), "depth": (0, 256), "rank": (1, 65536), "n_genes": (1, 1_000_000),
              "members": (1, 256), "occupancy_width": (1, 65536), "seed": (-2**63, 2**63 - 1)}


@dataclass
class ModelConfig:
    encoding: Encoding  # resolved (its data-dependent values filled in)
    n_genes: int
    rank: int  # latent features per network (→ linear gene decoder)
    width: int = 128
    depth: int = 3
    members: int = 1  # networks averaged (an ensemble: latents side by side, decoders / members)
    seed: int = 0  # torch seed of the initial weights (and the hash table)
    # µm subtracted (float64) from stack-frame points before the network sees them; None: the
    # stack frame itself (models written before the origin existed)
    origin: tuple | None = (0.0, 0.0, 0.0)
    occupancy_width: int = 32  # hidden units of the tissue-occupancy head

    @classmethod
    def for_data(cls, cfg, data, **kw) -> "ModelConfig":
        """The network a recipe ``cfg`` gives on ``data`` (:mod:`.data`): encoding resolved on the
        data's geometry, latent rank chosen for its size, frame centred on it."""
        spec = cls(encoding=cfg.encoding.resolve(data.geometry()), n_genes=int(data.n_genes),
                   rank=int(data.rank_for(cfg)), width=int(cfg.width), depth=int(cfg.depth),
                   seed=int(cfg.seed), origin=tuple(float(v) for v in data.origin))
        return spec.replace(**kw) if kw else spec

    def build(self):
        """The torch network (random weights, seeded by ``seed``)."""
        from .networks import build_network

        return build_network(self)

    def detail_um(self) -> tuple[float, float]:
        """(x/y, z) finest length in µm the network represents (the renderer samples at it)."""
        return self.encoding.detail_um()

    def replace(self, **kw) -> "ModelConfig":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["encoding"] = self.encoding.to_dict()
        d["origin"] = None if self.origin is None else [float(v) for v in self.origin]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """Checked: types, limits, finite numbers, a resolved encoding; InputError (no file named)
        for anything else."""
        if not isinstance(d, dict):
            raise InputError(None, "'model' must be a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise InputError(None, f"unknown model keys: {', '.join(sorted(unknown))}")
        for key, (lo, hi) in INT_LIMITS.items():
            if key not in d and key in ("members", "seed", "occupancy_width", "width", "depth"):
                continue
            v = d.get(key)
            if not (isinstance(v, int) and not isinstance(v, bool)) or not lo <= v <= hi:
                raise InputError(None, f"'model.{key}' must be a whole number in {lo}…{hi}, got {v!r}")
        enc = encoding_from_dict(d.get("encoding"))
        try:
            enc.validate()
        except InputError as exc:
            raise InputError(None, f"'model.encoding': {exc.problem}") from None

        def bad(what):
            raise InputError(None, f"'model.encoding' ({enc.name}): {what}")

        enc.check_resolved(bad)
        origin = d.get("origin", (0.0, 0.0, 0.0))
        if origin is not None:
            o = np.asarray(origin, dtype=np.float64) if isinstance(origin, (list, tuple)) else np.zeros(0)
            if o.shape != (3,) or not np.isfinite(o).all():
                raise InputError(None, "'model.origin' must be 3 finite numbers")
            origin = tuple(float(v) for v in o)
        kw = {k: v for k, v in d.items() if k not in ("encoding", "origin")}
        return cls(encoding=enc, origin=origin, **kw)

    @classmethod
    def from_arch(cls, arch: dict, config: dict | None = None) -> "ModelConfig":
        """The ModelConfig of a format-2 ``arch`` dict (and its flat config, for the encoding's
        settings): how model files written before format 3 are read."""
        config = config or {}
        if not isinstance(arch, dict):
            raise InputError(None, "'arch' must be a JSON object")
        name = arch.get("encoding")
        if name == "fourier":
            nf, wl = arch.get("n_freq"), arch.get("min_wavelength")
            enc = {"name": "fourier", "center": arch.get("center"), "extent": arch.get("extent"),
                   "n_freq": nf, "min_wavelength": wl,
                   "n_freq_xy": _int0(nf), "n_freq_z": int(config.get("n_freq_z", 4)),
                   "min_wavelength_xy_um": _num0(wl), "min_wavelength_z_um": _num0(wl, 2)}
        elif name == "hash":
            fine = arch.get("hash_fine")
            enc = {"name": "hash", "levels": arch.get("hash_levels", 12), "features": arch.get("hash_features", 2),
                   "log2_table": arch.get("hash_log2_table", 15), "finest_um": config.get("hash_finest_um"),
                   "finest_z_um": _num0(fine, 2), "lo": arch.get("lo"), "hi": arch.get("hi"),
                   "coarse": arch.get("hash_coarse"), "fine": fine}
        else:
            raise InputError(None, f"'arch.encoding' must be 'fourier' or 'hash', got {name!r}")
        d = {k: arch[k] for k in ("n_genes", "rank", "width", "depth", "members", "seed") if k in arch}
        d["encoding"] = enc
        d["origin"] = arch.get("origin")  # absent: the stack frame (None)
        return cls.from_dict(d)


def _int0(v, i=0):
    try:
        return int(v[i])
    except (TypeError, ValueError, IndexError, KeyError):
        return None


def _num0(v, i=0):
    try:
        x = float(v[i])
    except (TypeError, ValueError, IndexError, KeyError):
        return None
    return x if math.isfinite(x) and x > 0 else None
