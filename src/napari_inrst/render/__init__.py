"""Rendering a continuous expression field (no Qt; torch only through the field).

* :mod:`.grids` — plane grids for a field of view at screen resolution, volume grids within a
  memory budget (µm; napari scale/translate ready).
* :mod:`.plane` / :mod:`.volume` — chunked evaluation: occupancy mask (NaN outside tissue), the
  latent once, any genes decoded from it; automatic contrast limits.
* :mod:`.cache` — LRU cache of the latent per view: a gene switch is one small matrix product.
* :mod:`.export` — figures (high-resolution screenshots with colorbar and scale bar), volumes to
  OME-Zarr / TIFF with physical scale, movies through napari-animation when installed.
"""

from .cache import LatentCache
from .grids import PlaneGrid, VolumeGrid, plane_for_view, plane_from_extent, volume_grid
from .plane import auto_contrast, evaluate_plane, gene_indices, render_plane
from .volume import evaluate_volume, iter_slabs, render_volume

__all__ = [
    "LatentCache", "PlaneGrid", "VolumeGrid", "plane_for_view", "plane_from_extent", "volume_grid",
    "auto_contrast", "evaluate_plane", "gene_indices", "render_plane", "evaluate_volume", "iter_slabs",
    "render_volume",
]
