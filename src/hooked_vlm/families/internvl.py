"""InternVL (``InternVLForConditionalGeneration``, InternVL2.5/3 "-hf").

The module layout is LLaVA's (``model.vision_tower``, ``model.multi_modal_projector``,
``model.language_model``, ``lm_head``), so the decoder reuses TL's Llava adapter (a Qwen2 /
Llama-shaped LM with q/k/v biases). The tower is InternViT: each layer (layer scales
``lambda_1``/``lambda_2``, optional q/k-norm) is computed by HF with hooks around it, and its
attention is recomputed by :class:`EditableVisionAttentionBridge`, so
``vision_encoder.encoder_layers.{l}.attn.hook_pattern`` is editable.

Layout: ``<img>`` (BOI) + ``<IMG_CONTEXT>`` x 256 per tile (thumbnail last) + ``</img>``
(EOI); the tile arrangement is not in the ids (pass ``tiles=`` to ``patch_grid``).

Example:
    >>> tiny = build_tiny("internvl")   # one image of 1 tile, one of 2 tiles + thumbnail
"""

from __future__ import annotations

import math
from typing import Any

import torch
from transformer_lens.model_bridge.generalized_components import LinearBridge
from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent
from transformer_lens.model_bridge.generalized_components.vision_encoder import (
    vision_attention_config,
)
from transformer_lens.model_bridge.supported_architectures.llava import (
    LlavaArchitectureAdapter,
)

from hooked_vlm.adapters.vision import EditableVisionAttentionBridge, VisionLayerBridge
from hooked_vlm.families._tiny import LLAMA, TEXT_VOCAB, TinyModel, eager, finish, rows, seeded, tag
from hooked_vlm.families.base import Architecture, boi_eoi_tokens, roles
from hooked_vlm.layout import LayoutError
from hooked_vlm.layout.patch_grid import PatchRule, TiledPatches


class InternVLArchitectureAdapter(LlavaArchitectureAdapter):
    """Llava adapter whose tower is InternViT (``model.vision_tower``), patterns editable."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.weight_processing_conversions = {
            **self._qkvo_weight_conversions(include_biases=True),
        }
        layer = VisionLayerBridge(
            name="encoder.layer",
            submodules={
                "ln1": GeneralizedComponent(name="layernorm_before"),
                "attn": EditableVisionAttentionBridge(
                    name="attention", config=vision_attention_config(self.cfg),
                    out_proj="projection_layer",
                ),
                "ln2": GeneralizedComponent(name="layernorm_after"),
                "mlp": GeneralizedComponent(
                    name="mlp",
                    submodules={"in": LinearBridge(name="fc1"), "out": LinearBridge(name="fc2")},
                ),
            },
        )
        self.components["vision_encoder"] = GeneralizedComponent(
            name="model.vision_tower",
            submodules={
                "embeddings": GeneralizedComponent(name="embeddings"),
                "encoder_layers": layer,
            },
        )


def _patches(config: Any) -> PatchRule:
    n = config.image_seq_length
    side = math.isqrt(n)
    if side * side != n:
        raise LayoutError(f"InternVL's image_seq_length (per tile) is {n} tokens, not a square")
    return TiledPatches(side, overview="thumbnail", rows_from_eol=False)


def tiny_internvl(seed: int = 0, n_layers: int = 2) -> TinyModel:
    """InternVLForConditionalGeneration: 16 px tiles, 4 px patches, pixel shuffle 0.5 -> 4 tokens.

    Image 0 is one tile, image 1 three (two crops + thumbnail): ``<img>`` + 4 x tiles
    ``<IMG_CONTEXT>`` + ``</img>``. ``pixel_values`` stacks all tiles ``(4, 3, 16, 16)``.
    """
    from transformers import InternVLConfig, InternVLForConditionalGeneration, Qwen2Config
    from transformers.models.internvl.configuration_internvl import InternVLVisionConfig

    torch.manual_seed(seed)
    ids = {"image_id": 3, "boi_id": 4, "eoi_id": 5}
    first_word = 8
    per_tile = 4
    vision = InternVLVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        image_size=16, patch_size=4,
    )
    text = Qwen2Config(**{**LLAMA, "vocab_size": first_word + TEXT_VOCAB,
                          "num_hidden_layers": n_layers})
    config = InternVLConfig(
        vision_config=vision, text_config=text, image_token_id=ids["image_id"],
        image_seq_length=per_tile, downsample_ratio=0.5,
    )
    tag(config, boi_token_id=ids["boi_id"], eoi_token_id=ids["eoi_id"])
    model = finish(InternVLForConditionalGeneration(eager(config)), seed)
    tiles = [1, 3]
    blocks = [[ids["boi_id"], *[ids["image_id"]] * (per_tile * t), ids["eoi_id"]] for t in tiles]
    gen = seeded(seed + 1)
    inputs, spans = rows(blocks, first_word, gen)
    inputs["pixel_values"] = torch.randn(sum(tiles), 3, 16, 16, generator=gen)
    extras = {**ids, "tiles": tiles, "tokens_per_tile": per_tile, "image_spans": spans,
              "forward_keys": []}
    return TinyModel("internvl", model, inputs, per_tile, extras)


FAMILY = Architecture(
    "InternVLForConditionalGeneration",
    native=False,
    family="InternVL",
    special_tokens=boi_eoi_tokens,
    patch_rule=_patches,
    notes="<img> (BOI) + <IMG_CONTEXT> x 256 per tile (thumbnail last) + </img> (EOI).",
    gate="`eoi` (`</img>`)",
    roles=roles("boi", "eoi"),
    adapters={"InternVLForConditionalGeneration": InternVLArchitectureAdapter},
    tiny={"internvl": tiny_internvl},
)
