"""The Train widget's settings form: genes, steps, encoding, rank, loss weights, seed, device →
one :class:`~napari_inrst.field.config.FieldConfig`."""

from __future__ import annotations

import os

from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QSpinBox, QWidget

from ..field import encodings
from ..field.config import FieldConfig
from ..stack.prepare import DEFAULT_GENE_CAP, TOP_EXPRESSED


class TrainSettings(QWidget):
    """The controls; :meth:`config` the FieldConfig they describe (``extra`` overrides on top),
    :meth:`gene_setting` the Genes control (None = the CLI's default rule)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        defaults = FieldConfig()
        self.steps = QSpinBox(minimum=10, maximum=200000, singleStep=100, value=defaults.steps)
        self.steps.setToolTip("training steps of each network: a selection run (validated on held-out "
                              "data), then the final run up to the selected step; the bar shows the whole plan")
        self.genes = QSpinBox(minimum=0, maximum=100000, singleStep=100, value=0)
        self.genes.setSpecialValueText(f"auto (≤ {DEFAULT_GENE_CAP:,})")
        self.genes.setToolTip(f"genes the field models: auto = all up to {DEFAULT_GENE_CAP:,} (as "
                              f"`napari-inrst fit`); N = the {TOP_EXPRESSED} most expressed + most variable, "
                              "N in all. Fewer genes train faster.")
        self.encoding = QComboBox()
        self.encoding.addItems(list(encodings.names()))
        self.rank = QSpinBox(minimum=0, maximum=512, value=0)
        self.rank.setSpecialValueText("auto")
        self.lambda_rc = QDoubleSpinBox(minimum=0.0, maximum=10.0, singleStep=0.05, decimals=3,
                                        value=defaults.lambda_rc)
        self.lambda_kl = QDoubleSpinBox(minimum=0.0, maximum=10.0, singleStep=0.01, decimals=3,
                                        value=defaults.lambda_kl)
        self.seed = QSpinBox(minimum=0, maximum=2 ** 31 - 1, value=0)
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda"])
        self.deform = QCheckBox("deform sections")
        self.deform.setToolTip("as `napari-inrst fit --deform`: before the fit, refine every section's placement "
                               "against fields trained on the other sections and fit a smooth bounded deformation "
                               "per section (kept only when held-out sections are predicted better; about 6 short "
                               "fits more). Stored in the model; the View shows the sections where it puts them.")
        self.form = QFormLayout(self)
        self.form.setContentsMargins(0, 0, 0, 0)
        for label, w in (("Genes", self.genes), ("Steps", self.steps), ("Encoding", self.encoding),
                         ("Latent rank", self.rank), ("λ consistency", self.lambda_rc), ("λ KL", self.lambda_kl),
                         ("Seed", self.seed), ("Device", self.device), ("Alignment", self.deform)):
            self.form.addRow(label, w)

    def config(self, extra: dict | None = None) -> FieldConfig:
        # training runs in a child process at a lower CPU priority (field/background.py): the UI
        # wins the cores whenever it needs them; one core is still left free for the viewer
        kw = dict(steps=self.steps.value(), encoding=self.encoding.currentText(), rank=self.rank.value(),
                  lambda_rc=self.lambda_rc.value(), lambda_kl=self.lambda_kl.value(), seed=self.seed.value(),
                  device=self.device.currentText(), checkpoint_every=100,
                  threads=max(1, (os.cpu_count() or 1) - 1))
        kw.update(extra or {})
        return FieldConfig(**kw)

    def gene_setting(self) -> int | None:
        return self.genes.value() or None
