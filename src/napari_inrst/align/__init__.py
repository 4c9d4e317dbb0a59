"""Serial-section alignment (INRScrecon §3.1, made robust): expression-matched, closed-form fits.

``align_stack(stack)`` aligns every section into the frame of a reference section;
``kabsch`` is the closed-form fit; ``transforms_json`` writes the JSON the CLI prints.
No Qt and no torch here.
"""

from .kabsch import compose, kabsch, rigid_params
from .pairwise import PairResult, align_pair
from .sequence import (METHODS, AlignCancelled, AlignResult, align_stack, check_sections, iter_align_stack,
                       transforms_json)

__all__ = ["AlignCancelled", "AlignResult", "METHODS", "PairResult", "align_pair", "align_stack",
           "check_sections", "compose", "iter_align_stack", "kabsch", "rigid_params", "transforms_json"]
