"""Qwen2.5-VL (``Qwen2_5_VLForConditionalGeneration``): Qwen2-VL with a windowed vision tower.

The decoder, the token layout (``<|vision_start|>`` + ``<|image_pad|>`` x (h*w/4) +
``<|vision_end|>``) and the M-RoPE positions are Qwen2-VL's (:mod:`.qwen2_vl`). The tower
attends within windows of ``window_size`` px in most blocks and over the whole image in the
``fullatt_block_indexes`` blocks; HF reorders the patches window by window before the first
block and back after the merger. :class:`~.qwen2_vl.QwenVisionAttentionBridge` recomputes
each block's attention from its ``cu_seqlens`` (windows or whole images), so
``vision_encoder.blocks.{l}.attn.hook_pattern`` is editable, block-diagonal per window, in the
tower's window order (``model.hf_model.model.visual`` gives the order:
``transformers.vision_utils.get_vision_window_index``).

TransformerLens ships a Qwen2.5-VL adapter; it keeps HF's attention (patterns observed, edits
dropped) and names torchvision as required (only HF's fast image processor needs it). This one
subclasses it with Qwen2-VL's recomputed decoder and tower attention.

Example:
    >>> tiny = build_tiny("qwen2_5_vl")   # 32x32 and 16x32 px: 2x2 and 1x2 windows
"""

from __future__ import annotations

import torch

from hooked_vlm.families._tiny import TinyModel, eager, fill_zeros
from hooked_vlm.families.qwen2_vl import (
    QWEN_IDS,
    Qwen2VLArchitectureAdapter,
    qwen_batch,
    qwen_family,
    qwen_text,
)


class Qwen2_5_VLAdapter(Qwen2VLArchitectureAdapter):
    """Qwen2.5-VL: Qwen2-VL's adapter with the tower's gated MLP (RMS norms stay HF's)."""

    vision_mlp = {"gate": "gate_proj", "in": "up_proj", "out": "down_proj"}


def tiny_qwen2_5_vl(seed: int = 0, n_layers: int = 2) -> TinyModel:
    """Qwen2_5_VLForConditionalGeneration: 4 px patches, 2x2 merge, 16 px windows.

    Images of 32x32 and 16x32 px -> patch grids (1, 8, 8) and (1, 4, 8) -> 4x4 and 2x4 merged
    tokens, in 2x2 and 1x2 windows of 2x2 merged tokens. Vision block 0 attends within
    windows, block 1 over the whole image.
    """
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    ids = QWEN_IDS
    patch, temporal, merge = 4, 2, 2
    vision = {"depth": 2, "hidden_size": 32, "intermediate_size": 37, "num_heads": 4,
              "out_hidden_size": 64, "patch_size": patch, "spatial_merge_size": merge,
              "temporal_patch_size": temporal, "window_size": 16, "fullatt_block_indexes": [1]}
    config = Qwen2_5_VLConfig(
        text_config=qwen_text(n_layers), vision_config=vision, image_token_id=ids["image_id"],
        video_token_id=ids["video_id"], vision_start_token_id=ids["boi_id"],
        vision_end_token_id=ids["eoi_id"],
    )
    model = fill_zeros(Qwen2_5_VLForConditionalGeneration(eager(config)), seed)
    inputs, extras = qwen_batch([(1, 8, 8), (1, 4, 8)], 3 * temporal * patch**2, seed, merge)
    return TinyModel("qwen2_5_vl", model, inputs, 16, extras)


FAMILY = qwen_family(
    "Qwen2_5_VLForConditionalGeneration", "Qwen2.5-VL", Qwen2_5_VLAdapter, tiny_qwen2_5_vl,
    notes="<|vision_start|> (BOI) + <|image_pad|> x (h*w/4) + <|vision_end|> (EOI); "
    "M-RoPE positions; windowed vision tower (patterns in window order). A video is one "
    "<|vision_start|> <|video_pad|> x (t*h*w/4) <|vision_end|> span, split into t frames.",
)
