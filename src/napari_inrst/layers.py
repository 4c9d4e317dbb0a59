"""napari layer data for sections (plain tuples, no Qt): what readers and sample data return.

World axes are (z, y, x) in µm throughout the plugin, so Points of measured sections and Image
layers of the field overlay exactly.
"""

from __future__ import annotations

import numpy as np

from .stack import SectionStack

#: metadata key under which every plugin layer carries the shared :class:`SectionStack`.
STACK_KEY = "inrst_stack"
SECTION_KEY = "inrst_section"


def default_gene(stack: SectionStack) -> str:
    """The most variable gene across the stack (a good first colouring)."""
    X = stack.expression()
    return stack.genes[int(np.argmax(X.var(axis=0)))]


def section_points(stack: SectionStack, i: int, gene: str, *, colormap: str = "viridis",
                   contrast: tuple[float, float] | None = None, size_factor: float = 1.0):
    """Layer data tuple for section ``i``: a Points layer at its z, coloured by ``gene``."""
    s = stack[i]
    xy = s.xy
    data = np.column_stack([np.full(len(xy), s.z), xy[:, 1], xy[:, 0]])
    values = s.X[:, stack.gene_index(gene)]
    if contrast is None:
        contrast = gene_contrast(stack, gene)
    kwargs = dict(
        name=s.name,
        features={gene: values},
        face_color=gene,
        face_colormap=colormap,
        face_contrast_limits=tuple(float(c) for c in contrast),
        border_width=0,
        size=s.spot_diameter_um() * size_factor,
        out_of_slice_display=False,
        metadata={STACK_KEY: stack, SECTION_KEY: i, "gene": gene, "z_um": s.z},
        units="µm",
        axis_labels=("z", "y", "x"),
    )
    return data, kwargs, "points"


def gene_contrast(stack: SectionStack, gene: str) -> tuple[float, float]:
    """Shared contrast limits for a gene across sections: 1st–99.5th percentile."""
    g = stack.gene_index(gene)
    v = np.concatenate([s.X[:, g] for s in stack])
    lo, hi = np.percentile(v, [1, 99.5]) if len(v) else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def stack_layer_data(stack: SectionStack, gene: str | None = None, **kwargs) -> list:
    """One Points layer tuple per section, all coloured by ``gene`` with shared limits."""
    gene = gene or default_gene(stack)
    contrast = gene_contrast(stack, gene)
    return [section_points(stack, i, gene, contrast=contrast, **kwargs) for i in range(len(stack))]


def refresh_section_layers(layers, stack, *, gene: str | None = None, colormap: str | None = None,
                           size_factor: float = 1.0) -> list:
    """Bring the section Points layers of ``stack`` (in a napari ``LayerList``) up to date after
    the stack changed in place or they were moved onto it: positions (z, y, x), colour by
    ``gene`` (default: the layers' own gene when the stack still has it), sizes, metadata.
    Returns the updated layers. No Qt: layer API only."""
    mine = [lyr for lyr in layers if getattr(lyr, "metadata", {}).get(STACK_KEY) is stack
            and SECTION_KEY in lyr.metadata]
    if not mine:
        return []
    if gene is None or gene not in stack.genes:
        gene = next((lyr.metadata.get("gene") for lyr in mine if lyr.metadata.get("gene") in stack.genes), None)
    gene = gene or default_gene(stack)
    contrast = gene_contrast(stack, gene)
    for lyr in mine:
        i = lyr.metadata[SECTION_KEY]
        data, kw, _ = section_points(stack, i, gene, colormap=colormap or lyr.face_colormap.name,
                                     contrast=contrast, size_factor=size_factor)
        if len(data) == len(lyr.data):
            lyr.data = data
        else:  # not expected (a section keeps its cells), but never leave a layer inconsistent
            lyr.data = data
        feats = {**{c: lyr.features[c] for c in lyr.features.columns if len(lyr.features) == len(data)},
                 **kw["features"]}
        lyr.features = feats
        lyr.face_colormap = kw["face_colormap"]
        lyr.face_color = gene
        lyr.features = kw["features"]
        lyr.face_contrast_limits = kw["face_contrast_limits"]
        lyr.refresh_colors(update_color_mapping=False)
        lyr.size = kw["size"]
        lyr.metadata.update(kw["metadata"])
    return mine
