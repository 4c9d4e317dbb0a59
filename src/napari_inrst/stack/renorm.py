"""Another normalization for a stack already built (the Sections widget's "Normalization").

Two steps, so that a widget can run the slow one in a worker: :func:`renormalized_sections`
computes the new per-section AnnData (reads the stack, changes nothing; 5 × 200,000 cells: tens of
seconds), :func:`install_normalized` swaps them in (in place, instant). :func:`renormalize` does both.
No Qt and no torch here.
"""

from __future__ import annotations

from .sections import SectionStack, build_stack


def renormalized_sections(stack: SectionStack, normalize: str, inputs=None) -> list:
    """The sections' AnnData in normalization ``normalize`` (genes in the stack's order, spot sizes
    and current coordinates kept), from the raw inputs when given
    (:class:`~napari_inrst.io.readers.SectionInput`, one per section: exact library sizes), else
    from the raw values the sections keep (library size over the stack's genes only). Raises
    :class:`~napari_inrst.errors.InputError` when the values do not allow it (log1p of negatives)."""
    import anndata as ad

    adatas = []
    if inputs is not None and len(inputs) == len(stack):
        for i, s in zip(inputs, stack.sections):
            a = ad.AnnData(X=i.adata.X, obs=i.adata.obs, var=i.adata.var)  # no copy of the values
            a.obsm["spatial"] = s.xy_input  # the current coordinates (unit factor applied)
            adatas.append(a)
    else:
        for s in stack.sections:
            raw = s.adata.layers.get("counts", s.adata.layers.get("values"))
            a = ad.AnnData(X=raw, obs=s.adata.obs.copy(), var=s.adata.var.copy())
            a.obsm["spatial"] = s.xy_input
            adatas.append(a)
    new = build_stack(adatas, stack.z, names=stack.names, sources=[s.source for s in stack.sections],
                      gene_policy=stack.gene_policy, normalize=normalize)
    keep = [new.gene_index(g) for g in stack.genes]
    out = []
    for s, n in zip(stack.sections, new.sections):
        a = n.adata if keep == list(range(n.adata.n_vars)) else n.adata[:, keep].copy()
        spot = s.adata.uns.get("spot_diameter_um")
        if spot is not None:
            a.uns["spot_diameter_um"] = spot
        out.append(a)
    return out


def install_normalized(stack: SectionStack, normalize: str, adatas) -> SectionStack:
    """Put :func:`renormalized_sections`' AnnData into ``stack`` (in place) and record ``normalize``."""
    if len(adatas) != len(stack):
        raise ValueError(f"{len(adatas)} sections for a stack of {len(stack)}")
    for s, a in zip(stack.sections, adatas):
        s.adata = a
    stack.normalize = normalize
    for key in ("_inrst_default_gene",):  # statistics of the old values
        stack.__dict__.pop(key, None)
    return stack


def renormalize(stack: SectionStack, normalize: str, inputs=None) -> SectionStack:
    """Switch ``stack`` (in place) to another normalization (see :func:`renormalized_sections`)."""
    if normalize == stack.normalize:
        return stack
    return install_normalized(stack, normalize, renormalized_sections(stack, normalize, inputs))
