"""Janus (``JanusForConditionalGeneration``, understanding path).

Janus is a SigLIP-shaped vision tower (``model.vision_model``), an MLP aligner
(``model.aligner``) and a Llama decoder (``model.language_model``) with ``lm_head`` on top.
The decoder is TL's Llama adapter re-prefixed to ``model.language_model.``; the tower reuses
TL's SigLIP bridges (same ``embeddings`` / ``encoder.layers`` / ``post_layernorm`` layout)
with the output projection named ``projection_layer`` and attention recomputed by
:class:`~hooked_vlm.adapters.vision.EditableVisionAttentionBridge` (TL's own discards
``hook_pattern`` edits). The VQ image-generation side (``vqmodel``, ``generation_*``) is left
unmapped.

Layout: ``<begin_of_image>`` (BOI) + ``<image_placeholder>`` features + ``<end_of_image>``
(EOI); the BOI/EOI ids live only in the tokenizer.

Example:
    >>> tiny = build_tiny("janus")   # 16 px images -> 4x4 = 16 features
"""

from __future__ import annotations

import math
from typing import Any

import torch
from transformer_lens.model_bridge.generalized_components import (
    SiglipVisionEncoderBridge,
    VisionProjectionBridge,
)
from transformer_lens.model_bridge.generalized_components.siglip_vision_encoder import (
    SiglipVisionEncoderLayerBridge,
)
from transformer_lens.model_bridge.generalized_components.vision_encoder import (
    vision_attention_config,
)
from transformer_lens.model_bridge.supported_architectures.llama import (
    LlamaArchitectureAdapter,
)

from hooked_vlm.adapters.vision import EditableVisionAttentionBridge
from hooked_vlm.families._tiny import TEXT_VOCAB, TinyModel, eager, finish, llama, rows, seeded, tag
from hooked_vlm.families.base import Architecture, boi_eoi_tokens, n_images, roles
from hooked_vlm.layout import LayoutError
from hooked_vlm.layout.patch_grid import PatchRule, SquarePatches


class JanusArchitectureAdapter(LlamaArchitectureAdapter):
    """Llama adapter re-prefixed to ``model.language_model.`` plus Janus' tower and aligner."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.cfg.is_multimodal = True
        self.cfg.attn_implementation = "eager"
        self._extract_vision_dims(cfg)
        self._reprefix_components("model.", "model.language_model.")
        layers = SiglipVisionEncoderLayerBridge(
            name="vision_model.encoder.layers",
            config=self.cfg,
            submodules={
                "attn": EditableVisionAttentionBridge(
                    name="self_attn",
                    config=vision_attention_config(self.cfg),
                    out_proj="projection_layer",
                ),
            },
        )
        self.component_mapping["vision_encoder"] = SiglipVisionEncoderBridge(
            name="model.vision_model", config=self.cfg, submodules={"encoder_layers": layers}
        )
        self.component_mapping["vision_projector"] = VisionProjectionBridge(name="model.aligner")


def _patches(config: Any) -> PatchRule:
    n = config.vision_config.num_image_tokens
    side = math.isqrt(n)
    if side * side != n:
        raise LayoutError(f"Janus's num_image_tokens is {n} tokens, not a square grid")
    return SquarePatches(side)


def _placeholders(config: Any, extras: dict[str, Any]) -> list[int]:
    vision = config.vision_config
    return [(vision.image_size // vision.patch_size) ** 2] * n_images(extras)


def tiny_janus(seed: int = 0, n_layers: int = 2) -> TinyModel:
    """JanusForConditionalGeneration, understanding path: 16 px images -> 4x4 = 16 features.

    Layout ``<begin_of_image>`` + 16 ``<image_placeholder>`` + ``<end_of_image>``. The aligner
    maps the vision width to ``projection_dim``, which must equal the text hidden size.
    """
    from transformers import JanusConfig, JanusForConditionalGeneration
    from transformers.models.janus.configuration_janus import JanusVisionConfig, JanusVQVAEConfig

    torch.manual_seed(seed)
    ids = {"image_id": 3, "boi_id": 4, "eoi_id": 5}
    first_word = 8
    n_img = 16
    vision = JanusVisionConfig(
        hidden_size=24, num_hidden_layers=2, num_attention_heads=4, image_size=16, patch_size=4,
        mlp_ratio=1.5, projection_dim=32, depth=2, num_image_tokens=n_img,
    )
    vq = JanusVQVAEConfig(
        embed_dim=8, num_embeddings=16, latent_channels=32, base_channels=32,
        channel_multiplier=[1, 1], num_res_blocks=1, num_patches=2, projection_dim=32,
        image_token_embed_dim=32, num_hidden_layers=1,
    )
    config = JanusConfig(
        text_config=llama(first_word + TEXT_VOCAB, n_layers).to_dict(),
        vision_config=vision.to_dict(), vq_config=vq.to_dict(), image_token_id=ids["image_id"],
    )
    tag(config, boi_token_id=ids["boi_id"], eoi_token_id=ids["eoi_id"])
    model = finish(JanusForConditionalGeneration(eager(config)), seed)
    block = [ids["boi_id"], *[ids["image_id"]] * n_img, ids["eoi_id"]]
    gen = seeded(seed + 1)
    inputs, spans = rows([block, block], first_word, gen)
    inputs["pixel_values"] = torch.randn(2, 3, 16, 16, generator=gen)
    extras = {**ids, "grids": [(4, 4), (4, 4)], "image_spans": spans, "forward_keys": []}
    return TinyModel("janus", model, inputs, n_img, extras)


FAMILY = Architecture(
    "JanusForConditionalGeneration",
    native=False,
    family="Janus",
    special_tokens=boi_eoi_tokens,
    patch_rule=_patches,
    notes="<begin_of_image> (BOI) + 576 <image_placeholder> features + <end_of_image> "
    "(EOI); understanding path (SigLIP + aligner) only.",
    gate="`eoi` (`<end_of_image>`)",
    placeholders_per_image=_placeholders,
    roles=roles("boi", "eoi"),
    adapters={"JanusForConditionalGeneration": JanusArchitectureAdapter},
    tiny={"janus": tiny_janus},
)
