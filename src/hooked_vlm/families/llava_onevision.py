"""LLaVA-OneVision (``LlavaOnevisionForConditionalGeneration``): SigLIP tower, Qwen2 decoder.

Laid out as LLaVA-NeXT (:mod:`hooked_vlm.families.llava_next`: base image + rows closed by
``image_newline``), with ``anyres_max`` down-scaling; no BOI/EOI.

Example:
    >>> tiny = build_tiny("llava_onevision")   # 24x12 (2x1 tiles) and 24x24 (2x2) images
"""

from __future__ import annotations

import torch
from transformer_lens.model_bridge.supported_architectures.llava_onevision import (
    LlavaOnevisionArchitectureAdapter,
)

from hooked_vlm.adapters.vision import with_editable_tower
from hooked_vlm.families._tiny import LLAMA, TEXT_VOCAB, TinyModel, eager, finish
from hooked_vlm.families.base import Architecture, fixed, grid_placeholders, llava_tokens
from hooked_vlm.families.llava_next import PINPOINTS, anyres_batch, anyres_grid, anyres_patches

LlavaOnevisionAdapter = with_editable_tower(LlavaOnevisionArchitectureAdapter)


def tiny_llava_onevision(seed: int = 0, n_layers: int = 2) -> TinyModel:
    """LlavaOnevisionForConditionalGeneration: SigLIP tower on 12 px tiles, Qwen2 decoder.

    Images of 24x12 (2x1 tiles: 9 + 6x(3+1) = 33 tokens) and 24x24 (2x2: 9 + 6x(6+1) = 51).
    """
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        Qwen2Config,
        SiglipVisionConfig,
    )

    torch.manual_seed(seed)
    image_id, first_word = 3, 8
    vision = SiglipVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        image_size=12, patch_size=4,
    )
    text = Qwen2Config(**{**LLAMA, "vocab_size": first_word + TEXT_VOCAB,
                          "num_hidden_layers": n_layers})
    config = LlavaOnevisionConfig(
        vision_config=vision, text_config=text, image_token_index=image_id,
        image_grid_pinpoints=PINPOINTS, vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )
    model = finish(LlavaOnevisionForConditionalGeneration(eager(config)), seed)
    inputs, extras = anyres_batch(config, [(24, 12), (24, 24)], image_id, first_word, seed,
                                  single_newline=True)
    return TinyModel("llava_onevision", model, inputs, 33, extras)


FAMILY = Architecture(
    "LlavaOnevisionForConditionalGeneration",
    native=False,
    family="LLaVA-OneVision",
    special_tokens=llava_tokens,
    patch_rule=anyres_patches,
    grid_from_inputs=anyres_grid,
    tl_adapter=fixed("hooked_vlm.LlavaOnevision"),
    notes="As LLaVA-NeXT (base image + rows closed by image_newline, eol), with "
    "anyres_max down-scaling; no BOI/EOI.",
    gate="`last_image` (no EOI: the last `image_newline`)",
    placeholders_per_image=grid_placeholders(anyres_grid),
    adapters={"hooked_vlm.LlavaOnevision": LlavaOnevisionAdapter},
    tiny={"llava_onevision": tiny_llava_onevision},
)
