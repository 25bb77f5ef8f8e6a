"""Gemma 3 (``Gemma3ForConditionalGeneration``): SigLIP tower, pooled to 256 tokens, Gemma 3.

Layout: ``<start_of_image>`` (BOI) + ``<image_soft_token>`` x ``mm_tokens_per_image`` (a square,
average-pooled from the SigLIP patches) + ``<end_of_image>`` (EOI), each image wrapped in
``\\n\\n`` by the processor (pan-and-scan crops are images of their own).

**Attention among image tokens is bidirectional**: the processor's ``token_type_ids`` (1 on
the soft tokens) make HF add, on top of the causal mask, a block per image whose tokens all
see each other (and, in sliding-window layers, only within the window). hooked-vlm keeps that
mask exactly: both attention paths (SDPA and TL's recomputation) receive HF's 4-D mask,
``layout.attention_blocks`` names the blocks, knockout cuts only edges the mask allows, and a
reused prefix never cuts a block. Without ``token_type_ids`` HF (and hooked-vlm) run causal
attention. Generated tokens are text: ``token_type_ids`` shorter than ``input_ids`` (a prompt's
ids plus generated ones) are extended with 0, as HF's ``generate`` treats them.

The TL adapter is TransformerLens' own (Gemma 3's post-norms, q/k norms and sliding windows in
the recomputed attention) with the SigLIP tower's attention made editable.

Example:
    >>> tiny = build_tiny("gemma3")   # 24 px images -> 6x6 patches pooled to 3x3 tokens
    >>> HookedVLM.from_hf(tiny.model).layout(**tiny.inputs).attention_blocks[0]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from transformer_lens.model_bridge.supported_architectures.gemma3_multimodal import (
    Gemma3MultimodalArchitectureAdapter,
)

from hooked_vlm.adapters.vision import with_editable_tower
from hooked_vlm.compat import get_cache
from hooked_vlm.families._tiny import TEXT_VOCAB, TinyModel, fill_zeros, rows, seeded
from hooked_vlm.families.base import Architecture, decoder_tokens, n_images, roles
from hooked_vlm.layout import LayoutError, SpecialTokens
from hooked_vlm.layout.patch_grid import SquarePatches

KEY = "hooked_vlm.Gemma3"
Gemma3Adapter = with_editable_tower(Gemma3MultimodalArchitectureAdapter)


def _tokens(config: Any) -> SpecialTokens:
    return decoder_tokens(config, boi=("boi_token_id",), eoi=("eoi_token_id",))


def _side(config: Any) -> int:
    n = config.mm_tokens_per_image
    side = math.isqrt(n)
    if side * side != n:
        raise LayoutError(f"Gemma 3's mm_tokens_per_image is {n}, not a square grid")
    return side


def _placeholders(config: Any, extras: dict[str, Any]) -> list[int]:
    return [config.mm_tokens_per_image] * n_images(extras)


def image_blocks(config: Any, ids: torch.Tensor, extras: dict[str, Any]) -> torch.Tensor | None:
    """HF's ``block_sequence_ids`` of the forward: one block per run of image tokens
    (``token_type_ids == 1``), -1 elsewhere; ``None`` without ``token_type_ids``."""
    from transformers.models.gemma3.modeling_gemma3 import get_block_sequence_ids_for_mask

    types = extras.get("token_type_ids")
    if types is None:
        return None
    return get_block_sequence_ids_for_mask(extend_types(types, ids.shape[1], 0))


def extend_types(types: torch.Tensor, length: int, fill: int) -> torch.Tensor:
    """``token_type_ids`` of a prompt, extended with ``fill`` to ``length`` positions (the
    generated tokens); longer ones are refused."""
    if types.shape[1] > length:
        raise LayoutError(
            f"token_type_ids cover {types.shape[1]} positions but input_ids only {length}: "
            "pass the token_type_ids the processor returned with these input_ids."
        )
    if types.shape[1] == length:
        return types
    pad = types.new_full((types.shape[0], length - types.shape[1]), fill)
    return torch.cat([types, pad], dim=1)


def extend_type_ids(
    key: str, fill: int
) -> Callable[[Any, torch.Tensor, dict[str, Any]], dict[str, Any]]:
    """A ``prepare_forward`` that extends ``kw[key]`` with ``fill`` to the ids' length on a
    forward without a cache (a prompt plus generated tokens rerun whole)."""

    def prepare(hf_model: Any, ids: torch.Tensor, kw: dict[str, Any]) -> dict[str, Any]:
        types, past = kw.get(key), get_cache(kw)
        if types is None or (past is not None and past.get_seq_length() > 0):
            return kw
        return {**kw, key: extend_types(types, ids.shape[1], fill)}

    return prepare


def tiny_gemma3(seed: int = 0, n_layers: int = 2) -> TinyModel:
    """Gemma3ForConditionalGeneration: SigLIP on 24 px (4 px patches: 6x6), pooled to 3x3 = 9
    soft tokens; Gemma 3 decoder whose layer 0 slides over 8 positions (layer 1 is global).

    Rows: BOS + 3 words + ``<start_of_image>`` + 9 soft tokens + ``<end_of_image>`` + 5 words;
    ``token_type_ids`` 1 on the soft tokens.
    """
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, SiglipVisionConfig
    from transformers.models.gemma3.configuration_gemma3 import Gemma3TextConfig

    torch.manual_seed(seed)
    ids = {"image_id": 5, "boi_id": 3, "eoi_id": 4}
    first_word, n_img = 8, 9
    vision = SiglipVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        image_size=24, patch_size=4,
    )
    text = Gemma3TextConfig(
        vocab_size=first_word + TEXT_VOCAB, hidden_size=32, intermediate_size=37,
        num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
        query_pre_attn_scalar=8, sliding_window=8, max_position_embeddings=256,
        layer_types=["sliding_attention", "full_attention"] * (n_layers // 2)
        + ["sliding_attention"] * (n_layers % 2),
        bos_token_id=2, eos_token_id=1, pad_token_id=0,
    )
    config = Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=n_img,
        boi_token_index=ids["boi_id"], eoi_token_index=ids["eoi_id"],
        image_token_index=ids["image_id"],
    )
    config._attn_implementation = "eager"
    config.text_config._attn_implementation = "eager"
    config.vision_config._attn_implementation = "eager"
    model = fill_zeros(Gemma3ForConditionalGeneration(config), seed)
    block = [ids["boi_id"], *[ids["image_id"]] * n_img, ids["eoi_id"]]
    gen = seeded(seed + 1)
    inputs, spans = rows([block, block], first_word, gen)
    inputs["input_ids"][:, 0] = 2  # Gemma's BOS
    inputs["pixel_values"] = torch.randn(2, 3, 24, 24, generator=gen)
    inputs["token_type_ids"] = (inputs["input_ids"] == ids["image_id"]).long()
    extras = {**ids, "grids": [(3, 3), (3, 3)], "image_spans": spans,
              "forward_keys": ["token_type_ids"]}
    return TinyModel("gemma3", model, inputs, n_img, extras)


FAMILY = Architecture(
    "Gemma3ForConditionalGeneration",
    native=False,
    family="Gemma 3",
    special_tokens=_tokens,
    patch_rule=lambda config: SquarePatches(_side(config)),
    tl_adapter=lambda _config: KEY,
    notes="<start_of_image> (BOI) + <image_soft_token> x 256 + <end_of_image> (EOI); "
    "bidirectional attention among each image's tokens (token_type_ids).",
    gate="`eoi` (`<end_of_image>`), the first causal position after the bidirectional "
    "image block",
    placeholders_per_image=_placeholders,
    prepare_forward=extend_type_ids("token_type_ids", 0),
    attention_blocks=image_blocks,
    nested_images=True,
    roles=roles("boi", "eoi"),
    adapters={KEY: Gemma3Adapter},
    tiny={"gemma3": tiny_gemma3},
)
