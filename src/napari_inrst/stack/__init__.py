"""Sections placed in 3D: the in-memory :class:`SectionStack` (:mod:`.sections`), the lazily read
:class:`~napari_inrst.stack.lazy.LazyStack` for stacks larger than memory (:mod:`.lazy`), the
gene-panel and normalization policy shared by the CLI and the widgets (:mod:`.prepare`), normalization and highly variable genes (:mod:`.normalize`), another normalization for a built stack (:mod:`.renorm`), and small
matrix-product linear algebra (:mod:`.linalg`)."""

from .normalize import TARGET_SUM, highly_variable_genes, normalize_log1p
from .sections import (GENE_POLICIES, NORMALIZE_CHOICES, PlacedSection, Section, SectionStack, StackBase,
                       apply_transform, build_stack, estimate_spacing, gene_positions, stack_from_inputs)
from .renorm import install_normalized, renormalize, renormalized_sections

__all__ = ["GENE_POLICIES", "NORMALIZE_CHOICES", "TARGET_SUM", "PlacedSection", "Section", "SectionStack",
           "StackBase", "apply_transform", "build_stack", "estimate_spacing", "gene_positions", "highly_variable_genes",
           "install_normalized", "normalize_log1p", "renormalize", "renormalized_sections", "stack_from_inputs"]
