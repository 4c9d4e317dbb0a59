"""Layer helpers shared by the widgets (napari public API only, no Qt; the code lives in
:mod:`napari_inrst.render.display`, beside the other display helpers, so Qt-free view code can
use it too)."""

from ..render.display import update_or_add_image

__all__ = ["update_or_add_image"]
