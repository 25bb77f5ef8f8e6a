"""Pictures as the figures draw them: small uint8 copies, and how a processor fitted them.

Shared by the studies' reports and the explorer, which draw values over the pictures a model
saw (:func:`hooked_vlm.analysis.image_map.view_box` places a processor's view on them).

Example:
    >>> thumbnail(image, 192).shape          # (192, 192, 3) for a square picture
    >>> picture_fit(model)                   # "center_crop" for a CLIP processor that crops
"""

from __future__ import annotations

from typing import Any

import numpy as np

PICTURE_SIDE = 192  # pictures kept for a study report are at most this many pixels a side


def thumbnail(image: Any, side: int = PICTURE_SIDE) -> np.ndarray:
    """A PIL picture as uint8 ``[H, W, 3]``, at most ``side`` pixels a side."""
    picture = image.convert("RGB")
    picture.thumbnail((side, side))
    return np.asarray(picture, dtype=np.uint8)


def picture_fit(model: Any) -> str:
    """How the model's processor fits pictures into its view ("center_crop", "pad" or
    "fill"; see :func:`hooked_vlm.analysis.image_map.view_box`), for drawing on them."""
    images = getattr(model.processor, "image_processor", None)
    if getattr(images, "do_center_crop", False):
        return "center_crop"
    return "pad" if getattr(images, "do_pad", False) else "fill"
