"""napari layer data for sections (plain tuples, no Qt): what readers and sample data return.

World axes are (z, y, x) in µm throughout the plugin, so Points of measured sections and Image
layers of the field overlay exactly.
"""

from __future__ import annotations


from ..stack import SectionStack

#: metadata key under which every plugin layer carries the shared :class:`SectionStack`.
STACK_KEY = "inrst_stack"
SECTION_KEY = "inrst_section"
#: attribute of a stack holding its default gene (computed once: see :func:`default_gene`)
DEFAULT_GENE_KEY = "_inrst_default_gene"


def default_gene(stack: SectionStack) -> str:
    """The most variable gene across the stack (a good first colouring), over a sample of at most
    20,000 cells (never a dense concatenation of a large stack). Computed once per stack and
    normalization (the opener's worker computes it; the Train and View widgets then only read it)."""
    from ..render.sections import default_gene_sampled

    key = (stack.normalize, len(stack), tuple(stack.genes[:1]), stack.n_genes)
    cached = stack.__dict__.get(DEFAULT_GENE_KEY)
    if cached is not None and cached[0] == key and cached[1] in stack.genes:
        return cached[1]
    gene = default_gene_sampled(stack)
    stack.__dict__[DEFAULT_GENE_KEY] = (key, gene)
    return gene


def section_points(stack: SectionStack, i: int, gene: str, *, colormap: str = "viridis",
                   contrast: tuple[float, float] | None = None, size_factor: float = 1.0):
    """Layer data tuple for section ``i``: a Points layer at its z, coloured by ``gene``.

    Colours are computed once; the border is transparent (napari's default grey border turns small
    points into a grey haze when zoomed out).
    Sections with more than :data:`~.render.sections.LOD_CAP` cells start as a stable subsample
    of that many (``metadata['inrst_lod']['idx']``); the View widget then shows all cells in view
    when few enough are (level of detail, see :mod:`.render.sections`)."""
    from ..render.sections import LOD_KEY, section_update

    s = stack[i]
    if contrast is None:
        contrast = gene_contrast(stack, gene)
    idx, data, values, rgba = section_update(s, stack.gene_index(gene), contrast, colormap)
    metadata = {STACK_KEY: stack, SECTION_KEY: i, "gene": gene, "z_um": s.z, "colormap": colormap}
    if idx is not None:
        metadata[LOD_KEY] = {"idx": idx}
    kwargs = dict(
        name=s.name,
        features={gene: values},
        face_color=rgba,
        border_color="transparent",
        border_width=0,
        size=s.spot_diameter_um() * size_factor,
        out_of_slice_display=False,
        metadata=metadata,
        units="µm",
        axis_labels=("z", "y", "x"),
    )
    return data, kwargs, "points"


def gene_contrast(stack: SectionStack, gene: str) -> tuple[float, float]:
    """Shared contrast limits for a gene across sections: 1st–99.5th percentile (over a sample of
    at most 200,000 cells; every cell of smaller stacks)."""
    from ..render.sections import gene_contrast_sampled

    return gene_contrast_sampled(stack, gene)


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
    from ..render.sections import LOD_KEY, apply_section_update

    for lyr in mine:
        i = lyr.metadata[SECTION_KEY]
        cmap = colormap or lyr.metadata.get("colormap") or "viridis"
        data, kw, _ = section_points(stack, i, gene, colormap=cmap, contrast=contrast, size_factor=size_factor)
        # positions and colours in one update (colours computed once; a large section keeps a
        # level-of-detail subset, see render.sections)
        lod = kw["metadata"].get(LOD_KEY)
        apply_section_update(lyr, gene, (lod["idx"] if lod else None, data, kw["features"][gene], kw["face_color"]),
                             move=True)
        lyr.size = kw["size"]
        lyr.metadata.update(kw["metadata"], colormap=cmap)
    return mine
