"""The Pixtral vision tower, shared by LLaVA-with-Pixtral (pixtral-12b) and Mistral3.

Its layout: rows of ``[IMG]`` separated by ``[IMG_BREAK]`` (end-of-line), ``[IMG_END]`` (EOI),
no BOI; one ``[IMG]`` per (merged) patch of each image's real size, so the layout needs
``image_sizes``. The TL adapter is TransformerLens' Mistral3 layout (module paths match the
LLaVA checkpoint too) with a hooked, editable 2D-RoPE tower.

Example:
    >>> build_bridge_from_module(model, "hooked_vlm.Pixtral", hf_config=model.config)
"""

from __future__ import annotations

from typing import Any

import torch
from transformer_lens.model_bridge.supported_architectures.mistral3 import (
    Mistral3ArchitectureAdapter,
)

from hooked_vlm.adapters.vision import pixtral_tower
from hooked_vlm.families._tiny import rows, seeded
from hooked_vlm.families.base import needs

ADAPTER_KEY = "hooked_vlm.Pixtral"


class PixtralAdapter(Mistral3ArchitectureAdapter):
    """Mistral3 / LLaVA-with-Pixtral: Llava layout with a hooked, editable Pixtral tower."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.components["vision_encoder"] = pixtral_tower(self.cfg)


def is_pixtral(config: Any) -> bool:
    return getattr(getattr(config, "vision_config", None), "model_type", "") == "pixtral"


def pixtral_placeholders(config: Any, extras: dict[str, Any]) -> list[int]:
    """One ``[IMG]`` per (merged) patch of each image's real size."""
    why = "one (height, width) per image, to count each image's [IMG] tokens"
    sizes = needs(extras, "image_sizes", config.model_type, why).tolist()
    side = config.vision_config.patch_size * getattr(config, "spatial_merge_size", 1)
    return [(int(h) // side) * (int(w) // side) for h, w in sizes]


# ------------------------------------------------------------------------- tiny instances


def pixtral_vision(patch: int) -> Any:
    from transformers import PixtralVisionConfig

    return PixtralVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=patch, head_dim=8,
    )


def _pixtral_rows(grid: tuple[int, int], img: int, brk: int, end: int) -> list[int]:
    """Pixtral layout: each row of ``[IMG]`` ends in ``[IMG_BREAK]``, the last in ``[IMG_END]``."""
    n_rows, n_cols = grid
    out: list[int] = []
    for r in range(n_rows):
        out += [img] * n_cols + [end if r == n_rows - 1 else brk]
    return out


def pixtral_batch(
    sizes: list[tuple[int, int]], cell: int, ids: dict[str, int], first_word: int, seed: int
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Pixtral-style batch: images padded to the largest, ``image_sizes`` gives the real size.

    ``cell`` is the pixels per ``[IMG]`` token (patch size times the spatial merge).
    """
    grids = [(h // cell, w // cell) for h, w in sizes]
    blocks = [_pixtral_rows(g, ids["image_id"], ids["row_break_id"], ids["eoi_id"])
              for g in grids]
    gen = seeded(seed + 1)
    inputs, spans = rows(blocks, first_word, gen)
    side_h, side_w = max(h for h, _ in sizes), max(w for _, w in sizes)
    pixels = torch.zeros(len(sizes), 3, side_h, side_w)
    for i, (h, w) in enumerate(sizes):
        pixels[i, :, :h, :w] = torch.randn(3, h, w, generator=gen)
    inputs["pixel_values"] = pixels
    inputs["image_sizes"] = torch.tensor(sizes)
    extras = {**ids, "grids": grids, "image_spans": spans, "forward_keys": ["image_sizes"]}
    return inputs, extras
