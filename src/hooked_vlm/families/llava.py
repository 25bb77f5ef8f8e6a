"""LLaVA-1.5 (``LlavaForConditionalGeneration``), also with a Pixtral tower (pixtral-12b).

LLaVA-1.5 has no BOI/EOI of its own: the image is a run of ``<image>`` features (a CLIP square,
after a CLS with the "full" strategy). A LLaVA checkpoint with a Pixtral tower lays its image
out as Pixtral does (:mod:`hooked_vlm.families._pixtral`). The TL adapter is TransformerLens'
Llava adapter with the CLIP/SigLIP tower's attention recomputed so patterns are editable.

Example:
    >>> tiny = build_tiny("llava")       # CLIP tower 30 px / 6 px patches -> 25 features
    >>> model = HookedVLM.from_hf(tiny.model)
"""

from __future__ import annotations

from typing import Any

import torch
from transformer_lens.model_bridge.supported_architectures.llava import (
    LlavaArchitectureAdapter,
)

from hooked_vlm.adapters.vision import with_editable_tower
from hooked_vlm.families import _pixtral
from hooked_vlm.families._tiny import (
    TEXT_VOCAB,
    TinyModel,
    eager,
    finish,
    llama,
    seeded,
    tag,
    words,
)
from hooked_vlm.families.base import Architecture, llava_tokens, n_images
from hooked_vlm.layout.patch_grid import PatchRule, RowPatches, SquarePatches

LlavaAdapter = with_editable_tower(LlavaArchitectureAdapter)


def _adapter(config: Any) -> str:
    return _pixtral.ADAPTER_KEY if _pixtral.is_pixtral(config) else "hooked_vlm.Llava"


def _tokens_per_image(config: Any) -> int | None:
    if _pixtral.is_pixtral(config):  # size-dependent rows of [IMG]: split by [IMG_END] instead
        return None
    vision = config.vision_config
    n = (vision.image_size // vision.patch_size) ** 2
    return n + (1 if config.vision_feature_select_strategy == "full" else 0)


def _patches(config: Any) -> PatchRule:
    """Pixtral tower: rows split by [IMG_BREAK]; CLIP/SigLIP: a square after any CLS."""
    if _pixtral.is_pixtral(config):
        return RowPatches()
    vision = config.vision_config
    side = vision.image_size // vision.patch_size
    return SquarePatches(side, leading=_tokens_per_image(config) - side**2)


def _placeholders(config: Any, extras: dict[str, Any]) -> list[int]:
    """LLaVA-1.5: a fixed count per image; Pixtral towers: one per patch of each image."""
    if _pixtral.is_pixtral(config):
        return _pixtral.pixtral_placeholders(config, extras)
    return [_tokens_per_image(config)] * n_images(extras)


def _roles(config: Any) -> tuple[str, ...]:
    return ("row_break", "eoi") if _pixtral.is_pixtral(config) else ()


# ------------------------------------------------------------------------- tiny instances


def tiny_llava(seed: int = 0, n_layers: int = 2) -> TinyModel:
    """LlavaForConditionalGeneration: CLIP tower (30 px, 6 px patches -> 25 features) + Llama."""
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(seed)
    image_id, first_word = 3, 8
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        image_size=30, patch_size=6, projection_dim=32,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=llama(first_word + TEXT_VOCAB, n_layers),
        image_token_index=image_id, vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    config._attn_implementation = "eager"
    model = finish(LlavaForConditionalGeneration(config), seed)
    n_img = 25
    gen = seeded(seed + 1)
    rows_ = [[1, *words(3, first_word, gen), *[image_id] * n_img, *words(5, first_word, gen)]
             for _ in range(2)]
    inputs = {
        "input_ids": torch.tensor(rows_),
        "attention_mask": torch.ones(2, len(rows_[0]), dtype=torch.long),
        "pixel_values": torch.randn(2, 3, 30, 30, generator=gen),
    }
    return TinyModel("llava", model, inputs, n_img)


def tiny_pixtral(seed: int = 0, n_layers: int = 2) -> TinyModel:
    """LlavaForConditionalGeneration with a Pixtral tower (pixtral-12b layout), 4 px patches.

    Images of 12x16 and 16x12 px -> 3x4 and 4x3 ``[IMG]`` grids; ``image_sizes`` is required.
    """
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(seed)
    ids = {"image_id": 3, "row_break_id": 4, "eoi_id": 5}
    first_word = 8
    config = LlavaConfig(
        vision_config=_pixtral.pixtral_vision(4),
        text_config=llama(first_word + TEXT_VOCAB, n_layers),
        image_token_index=ids["image_id"], vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )
    tag(config, image_break_token_id=ids["row_break_id"], image_end_token_id=ids["eoi_id"])
    model = finish(LlavaForConditionalGeneration(eager(config)), seed)
    inputs, extras = _pixtral.pixtral_batch([(12, 16), (16, 12)], 4, ids, first_word, seed)
    return TinyModel("pixtral", model, inputs, 12, extras)


FAMILY = Architecture(
    "LlavaForConditionalGeneration",
    native=False,
    family="LLaVA",
    special_tokens=llava_tokens,
    patch_rule=_patches,
    tokens_per_image=_tokens_per_image,
    tl_adapter=_adapter,
    notes="LLaVA-1.5 has no BOI/EOI of its own: the image is a run of <image> features. "
    "With a Pixtral tower (pixtral-12b): rows of [IMG] separated by [IMG_BREAK] (eol), "
    "[IMG_END] as EOI; needs image_sizes.",
    gate="`last_image` (no EOI token; with a Pixtral tower: `[IMG_END]`, the `eoi`)",
    placeholders_per_image=_placeholders,
    roles=_roles,
    adapters={"hooked_vlm.Llava": LlavaAdapter, _pixtral.ADAPTER_KEY: _pixtral.PixtralAdapter},
    tiny={"llava": tiny_llava, "pixtral": tiny_pixtral},
)
