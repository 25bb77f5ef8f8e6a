"""Token layout of multimodal sequences (see :mod:`hooked_vlm.layout.token_layout`) and the
grid of each image's patch tokens (:mod:`hooked_vlm.layout.patch_grid`)."""

from hooked_vlm.layout.patch_grid import PatchGrid, patch_grid, patch_grids
from hooked_vlm.layout.token_layout import (
    GROUPS,
    ImageGrid,
    ImageSpan,
    Injection,
    LayoutError,
    TokenLayout,
    VideoGrid,
    build_layout,
)
from hooked_vlm.layout.tokens import SpecialTokens

__all__ = [
    "GROUPS",
    "ImageGrid",
    "ImageSpan",
    "Injection",
    "LayoutError",
    "PatchGrid",
    "SpecialTokens",
    "TokenLayout",
    "VideoGrid",
    "build_layout",
    "patch_grid",
    "patch_grids",
]
