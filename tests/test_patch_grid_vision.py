"""The HF vision path agrees with patch_grid: a pixel changed in one cell of the picture changes
exactly the decoder input at that cell's grid position.

With the vision towers' attention outputs zeroed, every feature depends on its own patch only
(patch embedding, MLPs, norms, 2x2 mergers and pixel shuffles stay local), so the planted pixel
traces where HF puts each patch: CLIP/SigLIP/Pixtral order, Mistral3's merger, LLaVA-NeXT's tile
packing, Qwen-VL's processor flattening and merger (Qwen2.5-VL's window reordering, Qwen3-VL's
DeepStack features), Gemma 3's pooling, InternVL/Idefics3/SmolVLM pixel shuffles.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from hooked_vlm.layout import patch_grids
from tests.conftest import Wrapped, wrap

INTERNVL_TILES = (1, 2)  # as in test_patch_grid: the two tiny crops come from no picture
# pixels per grid cell: patch size, times the 2x2 merge / pixel shuffle where there is one
CELL = {"llava": 6, "pixtral": 4, "mistral3": 8, "janus": 4, "llava_next": 4,
        "llava_onevision": 4, "qwen2_vl": 8, "internvl": 8, "idefics3": 8,
        "qwen2_5_vl": 8, "qwen3_vl": 8, "gemma3": 8, "paligemma": 4, "smolvlm": 8}


@contextmanager
def local_vision(model: torch.nn.Module) -> Iterator[None]:
    """Zero every vision-tower attention output while inside."""
    def zero(_module, _args, out):
        return (torch.zeros_like(out[0]), *out[1:]) if isinstance(out, tuple) else out * 0

    handles = [
        m.register_forward_hook(zero) for name, m in model.named_modules()
        if ("vision" in name or "visual" in name) and type(m).__name__.endswith("Attention")
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class _Seen(Exception):
    """Stops the forward once the decoder's input is known (the decoder itself is not needed)."""


def decoder_inputs(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    """The ``inputs_embeds`` the decoder receives (image features scattered in)."""
    seen = {}

    def stop(_module, _args, kwargs):
        seen["embeds"] = kwargs["inputs_embeds"]
        raise _Seen

    hook = model.get_decoder().register_forward_pre_hook(stop, with_kwargs=True)
    try:
        with torch.no_grad():
            model(**inputs)
    except _Seen:
        return seen["embeds"]
    finally:
        hook.remove()
    raise AssertionError("the decoder never ran")


def qwen_picture(w: Wrapped, b: int) -> np.ndarray:
    _, h, wd = w.inputs["image_grid_thw"][b].tolist()
    return torch.rand(h * 4, wd * 4, 3, generator=torch.Generator().manual_seed(b)).numpy()


def qwen_pixels(picture: np.ndarray) -> torch.Tensor:
    """Qwen2-VL's flattened patches of a picture, through HF's own image processor."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    processor = Qwen2VLImageProcessorPil(
        patch_size=4, temporal_patch_size=2, merge_size=2, do_resize=False, do_rescale=False,
        do_normalize=False,
    )
    return processor(images=[picture], return_tensors="pt")["pixel_values"]


def planted(w: Wrapped, b: int, view: str, r: int, c: int) -> torch.Tensor:
    """Example ``b``'s pixel_values with one pixel changed in cell ``(r, c)`` of ``view``."""
    name, x, cell = w.tiny.name, w.tiny.extras, CELL[w.tiny.name]
    if name.startswith("qwen"):
        picture = qwen_picture(w, b)
        picture[r * cell, c * cell] += 0.5
        return qwen_pixels(picture)
    tile_side = {"highres": 3, "tiles": 2}.get(view, max(r, c) + 1)  # cells per tile side
    (tr, r), (tc, c) = divmod(r, tile_side), divmod(c, tile_side)  # views of one tile: (0, r)
    if name in ("llava_next", "llava_onevision"):  # the base image, then tiles row-major
        index = (0, 0 if view == "base" else 1 + tr * x["layouts"][b]["tiles"][1] + tc)
    elif name == "internvl":  # this image's tiles, the thumbnail last
        index = (tr * INTERNVL_TILES[1] + tc if view == "tiles" else x["tiles"][b] - 1,)
    elif name in ("idefics3", "smolvlm"):  # tiles row-major, then the global image
        rows, cols = x["tiles"][b]
        index = (0, tr * cols + tc if view == "tiles" else rows * cols if view == "global" else 0)
    else:
        index = (0,)
    pixels = w.tiny.example(b)["pixel_values"].clone()
    pixels[(*index, slice(None), r * cell, c * cell)] += 5.0
    return pixels


@pytest.mark.parametrize("name", list(CELL))
def test_a_pixel_in_one_cell_changes_only_that_cells_position(name: str):
    """Every cell of every view; one batched forward per example: row 0 untouched, row k with
    the k-th cell planted."""
    w = wrap(name)
    layout = w.model.layout(**w.inputs)
    for b in range(2):
        tiles = INTERNVL_TILES if name == "internvl" and b == 1 else None
        cells = [
            (view, grid, r, c)
            for view, grid in patch_grids(layout, b, tiles=tiles, **w.inputs).items()
            for r in range(grid.shape[0])
            for c in range(grid.shape[1])
        ]
        one = w.tiny.example(b)
        if name.startswith("qwen"):
            one["pixel_values"] = qwen_pixels(qwen_picture(w, b))
        variants = [one["pixel_values"]] + [planted(w, b, v, r, c) for v, _, r, c in cells]
        batch = {k: torch.cat([v] * len(variants)) for k, v in one.items()}
        batch["pixel_values"] = torch.cat(variants)
        with local_vision(w.reference):
            embeds = decoder_inputs(w.reference, batch)
        for k, (view, grid, r, c) in enumerate(cells, start=1):
            changed = ((embeds[k] - embeds[0]).abs().amax(-1) > 1e-6).nonzero().flatten()
            assert changed.tolist() == [int(grid.positions[r, c])], (b, view, r, c)
