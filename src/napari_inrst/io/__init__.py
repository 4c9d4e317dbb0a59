"""Readers and validation: files on disk → validated AnnData sections (no Qt, no torch)."""

from .paths import path_kind, read_path, read_sections
from .readers import read_csv_pair, read_h5ad, read_h5ad_sections, read_visium
from .validate import validate_section

__all__ = [
    "read_csv_pair",
    "read_h5ad",
    "read_h5ad_sections",
    "path_kind",
    "read_path",
    "read_sections",
    "read_visium",
    "validate_section",
]
