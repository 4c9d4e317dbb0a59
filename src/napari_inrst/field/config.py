"""How to fit a field: the encoding's settings (nested), the network's size, the losses and the
training schedule (a dataclass, JSON round-trip). The trained network itself is described by
:class:`~napari_inrst.field.spec.ModelConfig`, which :meth:`ModelConfig.for_data` makes from
this recipe and the data.

Lengths are in µm. ``None`` in a ``*_um`` field means "choose from the data" (see
:func:`napari_inrst.field.fit.fit_field`); the resolved values are written back into the
config stored with the trained model, so a saved config reproduces the model.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from ..errors import InputError
from .encodings import Encoding, Fourier
from .encodings import from_dict as encoding_from_dict
from .encodings import get as encoding_class
from .encodings import names as encoding_names

DEVICES = ("auto", "cpu", "cuda", "mps")
TARGETS = ("auto", "dense", "projected")
COMPILE = ("auto", "on", "off")


@dataclass
class FieldConfig:
    # --- encoding -------------------------------------------------------------------------
    # an encoding's settings (field/encodings/: "fourier", the paper's eq. 2–3 with per-axis
    # scales, or "hash", a multiresolution grid); a name means that encoding's defaults. Finest
    # scales left None are chosen from the data's own spacings (unit-free); how much of that band
    # a fit uses is chosen on the task's validation split (coarse-to-fine window + early stopping).
    encoding: Encoding | str = field(default_factory=Fourier)
    anneal_frac: float = 0.3  # coarse-to-fine: fraction of steps over which the encoding opens (no early stop before)
    # --- network --------------------------------------------------------------------------
    width: int = 128
    depth: int = 3
    rank: int = 0  # low-rank latent → linear gene decoder; 0 = auto:
    auto_rank: int = 64  # … this rank,
    auto_rank_small: int = 8  # … or this one below small_data training spots (breast ST: 8 ≫ 64 there)
    small_data: int = 2000
    # Targets: per-gene z-scores (True: every gene weighs the same) or centred values (False:
    # genes weigh by their variance); "auto" = z-scores for panels of ≤ panel_genes modeled genes
    # (targeted panels such as MERFISH: every gene chosen for a reason), centred values above
    # (transcriptome-wide data, where most highly variable genes are sparse noise). By measurement
    # (benchmarks/bench_field.py): MERFISH, 155 genes, 50 µm Pearson 0.381 z vs 0.375 centred, SSIM
    # 0.666 vs 0.621; breast ST missing spots with the CLI's default 2,000 genes 0.190 z (below 2D
    # kNN, 0.202) vs 0.250 centred; its 500 most expressed genes 0.258 vs 0.262. "noise": each gene
    # scaled by its measurement noise (neighbour differences; threshold-free) — on 32 benchmark rows
    # 0.0035 below "auto" on average, the small HER2ST stacks up to 0.021 below (README).
    standardize: bool | str = "auto"
    panel_genes: int = 500
    # --- losses (paper eq. 7) -------------------------------------------------------------
    # Defaults by measurement (benchmarks/bench_field.py, 3 MERFISH holdouts + breast ST): the
    # consistency term did not improve held-out scores (50 µm Pearson 0.375 with λ1 = 0.1 vs 0.381
    # without; breast 0.251 vs 0.258) and cost ~50 % more time, so it is off by default; KL helped a
    # little on MERFISH (0.381 vs 0.374) and was neutral on breast ST.
    lambda_rc: float = 0.0  # λ1, representation consistency (paper eq. 5; 0 = off; the paper's loss: 0.1)
    lambda_kl: float = 0.01  # λ2, KL(pred ‖ true) over genes (paper eq. 6; 0 = off)
    rc_dim: int = 32
    rc_pretrain_steps: int = 200  # feature extractor pretrained as an autoencoder, then frozen
    aux_batch: int = 512  # cells of each batch the consistency and KL terms are estimated on (unbiased, cheaper)
    lambda_occ: float = 0.3  # tissue-occupancy BCE
    # --- optimisation ---------------------------------------------------------------------
    steps: int = 1500
    batch_size: int = 4096
    lr: float = 3e-3
    weight_decay: float = 1e-5
    # Blend with a local interpolant (3D kNN; 2D kNN for one section): the model predicts
    # (1 − w) · network + w · interpolant, w chosen on the task's validation split (0 = the network
    # alone, when interpolation does not help). False: the network alone (w = 0).
    blend: bool = True
    # False: one network trained and validated on held-out spots, no final run (quick fields, e.g.
    # the alignment refinement's half fields); True: the task-mimicking selection, then the final run
    final_fit: bool = True
    large_data: int = 200_000  # training cells above which a held-out-spots fit keeps its selection network
    ensemble: int = 0  # networks averaged in the final fit; 0 or 1 = one (the interpolant blend replaced auto-ensembles)
    ema: float = 0.99  # exponential moving average of the weights (validated and kept); 0 = off
    val_frac: float = 0.1
    val_every: int = 50
    patience: int = 6  # validations without improvement before stopping (after annealing)
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # CPU threads for torch; 0 = auto (free cores by load average, oversubscription is ~10× slower)
    checkpoint_every: int = 200
    log_every: int = 10  # steps between progress reports (the only host syncs besides validation)
    targets: str = "auto"  # "dense" (n × genes), "projected" (n × rank PCA coordinates, streamed), auto by size
    compile: str = "auto"  # torch.compile the network: auto = on CUDA only
    genes: list = field(default_factory=list)  # informative; the model stores its genes itself

    def __post_init__(self):
        if isinstance(self.encoding, str) and self.encoding in encoding_names():
            self.encoding = encoding_class(self.encoding)()  # a name: that encoding's defaults
        elif isinstance(self.encoding, dict):
            self.encoding = encoding_from_dict(self.encoding)

    def validate(self):
        if not isinstance(self.encoding, Encoding):
            encoding_class(self.encoding)  # raises: not a registered encoding
        self.encoding.validate()
        if self.targets not in TARGETS:
            raise InputError(None, f"targets must be one of {TARGETS}, got '{self.targets}'")
        if self.compile not in COMPILE:
            raise InputError(None, f"compile must be one of {COMPILE}, got '{self.compile}'")
        if self.device not in DEVICES:
            raise InputError(None, f"device must be one of {DEVICES}, got '{self.device}'")
        if self.standardize not in (True, False, "auto", "noise"):
            raise InputError(None, f"standardize must be true, false, 'noise' or 'auto', got {self.standardize!r}")
        if int(self.rank) < 0:
            raise InputError(None, f"rank must be ≥ 0 (0 = auto), got {self.rank}")
        for name in ("width", "depth", "steps", "batch_size", "val_every", "log_every", "aux_batch", "auto_rank",
                     "auto_rank_small", "panel_genes"):
            if int(getattr(self, name)) < 1:
                raise InputError(None, f"{name} must be ≥ 1, got {getattr(self, name)}")
        for name in ("lambda_rc", "lambda_kl", "lambda_occ", "lr", "weight_decay"):
            if float(getattr(self, name)) < 0:
                raise InputError(None, f"{name} must be ≥ 0, got {getattr(self, name)}")
        if not 0.0 <= self.val_frac < 0.9:
            raise InputError(None, f"val_frac must be in [0, 0.9), got {self.val_frac}")
        return self

    def resolved_standardize(self, n_genes: int) -> bool | str:
        """``standardize`` for a model of ``n_genes`` genes (``"auto"`` resolved)."""
        if self.standardize == "auto":
            return int(n_genes) <= int(self.panel_genes)
        if self.standardize == "noise":
            return "noise"
        return bool(self.standardize)

    def replace(self, **kw) -> "FieldConfig":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "genes"}
        d["encoding"] = self.encoding.to_dict()
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "FieldConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names - set(_V2_ENCODING_KEYS)
        if unknown:
            raise InputError(None, f"unknown field config keys: {', '.join(sorted(unknown))}")
        d = upgrade_config(d)
        if "encoding" in d:
            d["encoding"] = encoding_from_dict(d["encoding"])
        return cls(**d).validate()

    @classmethod
    def from_json(cls, s: str) -> "FieldConfig":
        return cls.from_dict(json.loads(s))


#: flat keys of a format-2 config (model files, checkpoints) that are an encoding's settings now
_V2_ENCODING_KEYS = ("n_freq_xy", "n_freq_z", "min_wavelength_xy_um", "min_wavelength_z_um", "hash_levels",
                     "hash_features", "hash_log2_table", "hash_finest_um", "wavelength_candidates")


def upgrade_config(d: dict) -> dict:
    """A config dict of format 2 (flat ``n_freq_*``, ``min_wavelength_*``, ``hash_*`` keys, the
    encoding a name) → the nested form; a nested one is returned as it is (copied)."""
    d = dict(d)
    old = {k: d.pop(k) for k in _V2_ENCODING_KEYS if k in d}
    name = d.get("encoding", "fourier")
    if name not in ("fourier", "hash"):  # nested already (a dict), or not an encoding (refused later)
        return d
    if name == "hash":
        wl_z = old.get("min_wavelength_z_um")
        d["encoding"] = {"name": "hash", "levels": old.get("hash_levels", 12), "features": old.get("hash_features", 2),
                         "log2_table": old.get("hash_log2_table", 15), "finest_um": old.get("hash_finest_um"),
                         "finest_z_um": wl_z / 2 if isinstance(wl_z, (int, float)) and wl_z else None}
    elif name == "fourier":
        d["encoding"] = {"name": "fourier", "n_freq_xy": old.get("n_freq_xy", 16), "n_freq_z": old.get("n_freq_z", 4),
                         "min_wavelength_xy_um": old.get("min_wavelength_xy_um"),
                         "min_wavelength_z_um": old.get("min_wavelength_z_um")}
    return d
