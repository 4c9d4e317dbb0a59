"""Builders shared by the tests of the field's parts: a tiny synthetic stack and a quick recipe."""

import pytest


@pytest.fixture(scope="package")
def tiny_stack():
    """The synthetic sample, small: 4 sections 30 µm apart, 12 genes, spots 150 µm apart (aligned)."""
    from napari_inrst.synthetic.sample import sample_stack

    stack, tissue = sample_stack(n_genes=12, n_sections=4, missing=(), spot_spacing=150.0)
    stack.set_transforms([s.adata.uns["truth_matrix"] for s in stack.sections])
    return stack, tissue


#: a fit of a second or two
TINY = dict(steps=40, batch_size=256, width=16, depth=1, rank=4, val_every=10, patience=3, rc_pretrain_steps=5,
            threads=1, device="cpu")
