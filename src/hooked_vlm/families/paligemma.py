"""PaliGemma 2 (``PaliGemmaForConditionalGeneration``): SigLIP patches + Gemma 2, prefix-LM.

Layout: ``<image>`` x (image_size / patch_size)**2 first (no BOI/EOI), then ``<bos>``, the
prompt and ``\\n``: the *prefix*; the answer (*suffix*) follows. The processor's
``token_type_ids`` are 0 on the prefix and 1 on the suffix, and HF makes the whole prefix one
**bidirectional** block: the image attends to the prompt and the prompt to the image, on the
first forward only (a cached step is causal, as the suffix is). hooked-vlm keeps that mask
exactly: ``layout.attention_blocks`` names the prefix, knockout cuts only edges the mask allows,
and an intervention on any prefix position changes the whole prefix, so a reused KV prefix
falls back to full recomputation there (interventions on the suffix reuse the prefix).
Generated tokens are suffix: ``token_type_ids`` shorter than ``input_ids`` are extended with 1,
as HF's ``generate`` does. Positions are 1-based (HF's own).

TransformerLens has no PaliGemma adapter: its Gemma 2 adapter (post-norms, logit softcapping,
sliding windows in the recomputed attention) is re-prefixed to ``model.language_model.`` and
given the SigLIP tower (attention editable) and the projector.

Example:
    >>> tiny = build_tiny("paligemma")   # 16 px images -> 4x4 = 16 image tokens
"""

from __future__ import annotations

from typing import Any

import torch
from transformer_lens.model_bridge.generalized_components import (
    SiglipVisionEncoderBridge,
    VisionProjectionBridge,
)
from transformer_lens.model_bridge.supported_architectures.gemma2 import (
    Gemma2ArchitectureAdapter,
)

from hooked_vlm.adapters.vision import make_vision_attention_editable
from hooked_vlm.families._tiny import TEXT_VOCAB, TinyModel, fill_zeros, seeded, words
from hooked_vlm.families.base import Architecture, decoder_tokens, n_images
from hooked_vlm.families.gemma3 import extend_type_ids, extend_types
from hooked_vlm.layout import SpecialTokens
from hooked_vlm.layout.patch_grid import SquarePatches


class PaliGemmaArchitectureAdapter(Gemma2ArchitectureAdapter):
    """TL's Gemma 2 adapter under ``model.language_model.`` plus the SigLIP tower (attention
    editable) and ``model.multi_modal_projector``."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.cfg.is_multimodal = True
        self._extract_vision_dims(cfg)
        self._reprefix_components("model.", "model.language_model.")
        self.component_mapping["vision_encoder"] = SiglipVisionEncoderBridge(
            name="model.vision_tower", config=self.cfg
        )
        self.component_mapping["vision_projector"] = VisionProjectionBridge(
            name="model.multi_modal_projector"
        )
        make_vision_attention_editable(self)


def _side(config: Any) -> int:
    return config.vision_config.image_size // config.vision_config.patch_size


def _tokens(config: Any) -> SpecialTokens:
    return decoder_tokens(config)


def _placeholders(config: Any, extras: dict[str, Any]) -> list[int]:
    return [_side(config) ** 2] * n_images(extras)


def prefix_block(config: Any, ids: torch.Tensor, extras: dict[str, Any]) -> torch.Tensor | None:
    """HF's ``block_sequence_ids``: 0 on the prefix (``token_type_ids == 0``, padding
    excepted), -1 on the suffix; ``None`` without ``token_type_ids``."""
    types = extras.get("token_type_ids")
    if types is None:
        return None
    prefix = extend_types(types, ids.shape[1], 1) == 0
    mask = extras.get("attention_mask")
    if mask is not None and mask.shape == prefix.shape:
        prefix = prefix & mask.bool()
    return torch.where(prefix, 0, -1)


def tiny_paligemma(seed: int = 0, n_layers: int = 2) -> TinyModel:
    """PaliGemmaForConditionalGeneration (PaliGemma 2: Gemma 2 decoder, logit softcapping,
    layer 0 sliding over 8 positions): SigLIP on 16 px, 4 px patches -> 16 image tokens.

    Rows: 16 ``<image>`` + ``<bos>`` + 3 words + ``\\n`` (the prefix, ``token_type_ids`` 0) +
    4 words of suffix (``token_type_ids`` 1).
    """
    from transformers import (
        Gemma2Config,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        SiglipVisionConfig,
    )

    torch.manual_seed(seed)
    ids = {"image_id": 3, "newline_id": 4}
    first_word, n_img = 8, 16
    vision = SiglipVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        image_size=16, patch_size=4, projection_dim=32,
    )
    text = Gemma2Config(
        vocab_size=first_word + TEXT_VOCAB, hidden_size=32, intermediate_size=37,
        num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
        query_pre_attn_scalar=8, sliding_window=8, max_position_embeddings=256,
        attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
        layer_types=["sliding_attention", "full_attention"] * (n_layers // 2)
        + ["sliding_attention"] * (n_layers % 2),
        bos_token_id=2, eos_token_id=1, pad_token_id=0,
    )
    config = PaliGemmaConfig(
        vision_config=vision, text_config=text, image_token_index=ids["image_id"],
        projection_dim=32,
    )
    config._attn_implementation = "eager"
    config.text_config._attn_implementation = "eager"
    config.vision_config._attn_implementation = "eager"
    model = fill_zeros(PaliGemmaForConditionalGeneration(config), seed)
    gen = seeded(seed + 1)
    seqs, types = [], []
    for _ in range(2):
        prefix = [*[ids["image_id"]] * n_img, 2, *words(3, first_word, gen), ids["newline_id"]]
        suffix = words(4, first_word, gen)
        seqs.append(prefix + suffix)
        types.append([0] * len(prefix) + [1] * len(suffix))
    inputs = {
        "input_ids": torch.tensor(seqs),
        "attention_mask": torch.ones(2, len(seqs[0]), dtype=torch.long),
        "pixel_values": torch.randn(2, 3, 16, 16, generator=gen),
        "token_type_ids": torch.tensor(types),
    }
    extras = {**ids, "grids": [(4, 4), (4, 4)], "image_spans": [(0, n_img)] * 2,
              "prefix": n_img + 5, "forward_keys": ["token_type_ids"]}
    return TinyModel("paligemma", model, inputs, n_img, extras)


FAMILY = Architecture(
    "PaliGemmaForConditionalGeneration",
    native=False,
    family="PaliGemma",
    special_tokens=_tokens,
    patch_rule=lambda config: SquarePatches(_side(config)),
    notes="<image> x 256 first (no BOI/EOI), then <bos> prompt \\n: a bidirectional prefix "
    "(token_type_ids 0); the answer is causal.",
    gate="`last_image` (no EOI; image and prompt see each other, so the prompt's closing "
    "`\\n`, the last prefix position, is the other candidate)",
    placeholders_per_image=_placeholders,
    prepare_forward=extend_type_ids("token_type_ids", 1),
    attention_blocks=prefix_block,
    adapters={"PaliGemmaForConditionalGeneration": PaliGemmaArchitectureAdapter},
    tiny={"paligemma": tiny_paligemma},
)
