"""Shared builders for the view-model tests (no Qt: a napari ViewerModel at most)."""

import pytest


def run_to_end(job):
    """Run a widget job (a generator function) as its worker would: (return value, yielded items)."""
    gen, seen = job(), []
    try:
        while True:
            seen.append(next(gen))
    except StopIteration as stop:
        return stop.value, seen


@pytest.fixture(scope="session")
def small():
    """A small aligned synthetic stack (12 genes, spots 120 µm apart) and its tissue."""
    from napari_inrst.synthetic.sample import sample_stack

    return sample_stack(misplace=False, n_genes=12, spot_spacing=120.0)
