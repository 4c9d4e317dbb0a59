"""napari-inrst: continuous 3D expression fields from serial spatial-transcriptomics sections.

The core (``io`` → ``stack`` → ``align`` → ``field`` → ``render``) is importable without Qt
and without torch; torch is imported inside the functions that need it.
"""

__version__ = "0.1.0"

from .errors import InputError  # noqa: E402

__all__ = ["InputError", "__version__"]
