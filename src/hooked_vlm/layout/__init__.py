"""Token layout of multimodal sequences (see :mod:`hooked_vlm.layout.token_layout`)."""

from hooked_vlm.layout.token_layout import (
    GROUPS,
    ImageGrid,
    ImageSpan,
    LayoutError,
    TokenLayout,
    build_layout,
)

__all__ = ["GROUPS", "ImageGrid", "ImageSpan", "LayoutError", "TokenLayout", "build_layout"]
