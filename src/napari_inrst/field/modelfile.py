"""The model file's metadata: format versions, checks and the upgrade of older files.

A model file is one safetensors file: the network's tensors, named groups of extra tensors
(``interp.*``: the interpolant; see :data:`~.model.TENSOR_GROUPS`) and a JSON ``meta``:

* format 3: ``meta["model"]`` — the :class:`~.spec.ModelConfig` (resolved encoding nested);
  ``meta["config"]`` — the :class:`~.config.FieldConfig` recipe (encoding settings nested);
* format 2 (and earlier): ``meta["arch"]`` (a flat dict) and a flat config with ``hash_*``,
  ``n_freq_*``, ``min_wavelength_*`` keys; :func:`upgrade` turns such metadata into format 3
  on load (the tensors are the same).

:func:`check_meta` validates the metadata (types, shapes, finite numbers, limits) before
anything is built from it; every problem is an InputError naming the file.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .config import upgrade_config
from .spec import ModelConfig

FORMAT = "napari-inrst-field"
#: 3: meta["model"] (ModelConfig) replaces meta["arch"]; nested encoding in meta["config"]
#: 2: optional interpolant tensors ("interp.*") and meta["interp"], meta["validation"]
FORMAT_VERSION = 3

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


def upgrade(meta: dict, path) -> dict:
    """Format-2 (or earlier) metadata → format 3: ``arch`` → ``model``, the flat encoding keys
    of the config → its nested encoding. Format 3 is returned as it is."""
    if meta.get("format_version", 0) >= 3:
        return meta
    meta = dict(meta)
    cfg = meta.get("config")
    arch = meta.pop("arch", None)
    if not isinstance(arch, dict):
        _bad(path, "'arch' must be a JSON object")
    if not isinstance(cfg, dict):
        _bad(path, "'config' must be a JSON object")
    try:
        spec = ModelConfig.from_arch(arch, cfg)
    except InputError as exc:
        _bad(path, exc.problem.replace("'model.", "'arch."))
    cfg = upgrade_config(cfg)
    meta["config"] = cfg
    meta["model"] = spec.to_dict()
    meta["upgraded_from"] = meta.get("format_version", 0)
    meta["format_version"] = FORMAT_VERSION
    return meta


def check_meta(meta, path) -> dict:
    """Validate the JSON metadata of a model file (upgraded to the current format first) before
    anything is built from it. Returns the (upgraded) metadata; every problem is an InputError
    naming ``path``."""
    if not isinstance(meta, dict):
        raise InputError(path, "not a napari-inrst model file "
                               f"(metadata is a JSON {type(meta).__name__}, not an object)")
    if meta.get("format") != FORMAT:
        raise InputError(path, "not a napari-inrst model file")
    ver = meta.get("format_version", 0)
    if not (isinstance(ver, int) and not isinstance(ver, bool)) or ver < 0:
        _bad(path, f"format_version must be a whole number, got {ver!r}")
    if ver > FORMAT_VERSION:
        raise InputError(path, f"model format version {ver} is newer than this napari-inrst understands "
                               f"({FORMAT_VERSION}); update napari-inrst")
    meta = upgrade(meta, path)
    for key, typ in (("genes", list), ("model", dict), ("config", dict), ("stack_meta", dict)):
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
    _check_stack_meta(meta["stack_meta"], path)
    spec = model_config(meta, path)
    if spec.n_genes != g:
        _bad(path, f"'model.n_genes' is {spec.n_genes} but the file lists {g} genes")
    return meta


def _check_stack_meta(sm: dict, path):
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


def model_config(meta: dict, path) -> ModelConfig:
    """The checked :class:`ModelConfig` of (upgraded) metadata."""
    try:
        return ModelConfig.from_dict(meta["model"])
    except InputError as exc:
        _bad(path, exc.problem)
    except Exception as exc:  # noqa: BLE001 - wrong types inside the encoding
        _bad(path, f"'model' describes no network ({_reason(exc)})")


def expected_shapes(spec: ModelConfig) -> dict:
    """Tensor name → shape of the network ``spec`` describes, computed on torch's meta device
    (no memory is allocated, whatever the sizes)."""
    import torch

    with torch.device("meta"):
        net = spec.build()
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _reason(exc) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:160]
