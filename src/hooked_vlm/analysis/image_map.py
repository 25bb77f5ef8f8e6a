"""Per-position values (attention to image keys, attribution scores) put onto the picture.

:func:`scatter_to_grid` reads a ``[..., pos]`` quantity at a :class:`~hooked_vlm.layout.PatchGrid`'s
positions, giving ``[..., rows, cols]`` in picture layout. :func:`to_picture` upsamples such a
grid to the picture's pixels, given how the processor fitted the picture into the model's view:

=================  ===========================================================================
``fit``            the model's view of a picture of ``H x W`` pixels
=================  ===========================================================================
``"fill"``         the whole picture, resized (Emu3, Pixtral, Qwen2-VL, LLaVA-NeXT, InternVL,
                   Idefics3: their grids cover the picture even when the aspect changes a little)
``"center_crop"``  the centred ``min(H, W)`` square (processors with ``do_center_crop``: HF's
                   Chameleon, and LLaVA-1.5 checkpoints whose processor crops)
``"pad"``          the picture padded to a centred ``max(H, W)`` square (Janus, and LLaVA-1.5
                   processors with ``do_pad``)
=================  ===========================================================================

Example:
    >>> pattern = cache["blocks.10.attn.hook_pattern"]            # [batch, head, query, key]
    >>> values = pattern[0, :, query].sum(0)                       # [key] summed over heads
    >>> grid = patch_grid(layout, example=0, **inputs)
    >>> heat = scatter_to_grid(values, grid)                       # [rows, cols]
    >>> pixels = to_picture(heat, (480, 640), fit="center_crop")   # [480, 640], NaN off-view
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from jaxtyping import Float
from torch import Tensor

from hooked_vlm.layout.patch_grid import PatchGrid

Fit = Literal["fill", "center_crop", "pad"]


def scatter_to_grid(
    values: Float[Tensor, "*lead pos"], grid: PatchGrid
) -> Float[Tensor, "*lead rows cols"]:
    """``values[..., p]`` at each patch position ``p`` of ``grid``, laid out as the picture.

    Example:
        >>> scatter_to_grid(torch.arange(10.0), grid)   # the positions themselves, as floats
    """
    needed = int(grid.positions.max()) + 1
    if values.shape[-1] < needed:
        raise ValueError(
            f"values of shape {tuple(values.shape)} end in {values.shape[-1]} positions, but the "
            f"grid reaches position {needed - 1}: pass the values over the whole sequence (the "
            "key axis of an attention pattern, say), not only over the image."
        )
    return values[..., grid.positions.to(values.device)]


def view_box(picture_size: tuple[int, int], fit: Fit = "fill") -> tuple[float, float, float, float]:
    """``(top, left, height, width)`` of the model's view in picture pixels (negative offsets:
    the view extends past the picture, as padding does).

    Example:
        >>> view_box((480, 640), "center_crop")
        (0.0, 80.0, 480.0, 480.0)
    """
    if fit not in get_args(Fit):
        raise ValueError(
            f"fit={fit!r} is not one of {get_args(Fit)} (see hooked_vlm.analysis.image_map)."
        )
    height, width = (float(x) for x in picture_size)
    if fit == "fill":
        return 0.0, 0.0, height, width
    side = min(height, width) if fit == "center_crop" else max(height, width)
    return (height - side) / 2, (width - side) / 2, side, side


def to_picture(
    grid_values: Float[Tensor, "*lead rows cols"],
    picture_size: tuple[int, int],
    fit: Fit = "fill",
) -> Float[Tensor, "*lead height width"]:
    """Each picture pixel takes the value of the grid cell its centre falls in (nearest
    upsampling); pixels outside the model's view (cropped away) are NaN.

    Example:
        >>> to_picture(torch.eye(2), (4, 6)).shape
        torch.Size([4, 6])
    """
    rows, cols = grid_values.shape[-2:]
    top, left, height, width = view_box(picture_size, fit)
    r = _cells(picture_size[0], top, height, rows, grid_values.device)
    c = _cells(picture_size[1], left, width, cols, grid_values.device)
    out = grid_values.float()[..., r.clamp(0, rows - 1)[:, None], c.clamp(0, cols - 1)[None, :]]
    outside = ((r < 0) | (r >= rows))[:, None] | ((c < 0) | (c >= cols))[None, :]
    return out.masked_fill(outside, float("nan"))


def _cells(
    n_pixels: int, start: float, length: float, n_cells: int, device: torch.device
) -> Tensor:
    """The cell index of each pixel centre along one axis (out of range: off the view)."""
    centres = torch.arange(n_pixels, device=device, dtype=torch.float64) + 0.5
    return torch.floor((centres - start) * n_cells / length).long()
