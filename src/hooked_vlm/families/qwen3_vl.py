"""Qwen3-VL (``Qwen3VLForConditionalGeneration``): DeepStack, interleaved M-RoPE, q/k norms.

The tower (``model.visual``) is Qwen3.5's layout: learned position embedding resampled to each
image's grid plus a 2D rotary, fused ``qkv`` attention over each image (``cu_seqlens``), a
``linear_fc1``/``linear_fc2`` MLP. **DeepStack**: the outputs of the vision blocks in
``deepstack_visual_indexes`` go through their own patch mergers and are *added* to the
decoder's residual stream at the image positions after decoder blocks 0, 1, ... (one per
merger), inside HF's text loop, not through attention. hooked-vlm names each injection
``blocks.{l}.hook_deepstack`` (``[batch, pos, d_model]``, zero off the image; edit it to
change or remove what is injected) and lists them in every layout (``layout.injections``), so
``blocks.{l+1}.hook_resid_pre = blocks.{l}.hook_resid_post + blocks.{l}.hook_deepstack``.

The decoder is Qwen3's (per-head q/k RMS norms, no q/k/v biases) under interleaved M-RoPE,
which the text rotary folds into ordinary rotate-half ``(cos, sin)``: TL's recomputed
attention reproduces it, so decoder patterns are editable. TransformerLens ships a Qwen3-VL
adapter that keeps HF's attention (patterns observed only) and names torchvision as required
(only HF's fast image processor needs it): this one replaces it with Qwen2-VL's recomputed
decoder and tower attention.

Layout as Qwen2-VL: ``<|vision_start|>`` + ``<|image_pad|>`` x (h*w/4) + ``<|vision_end|>``.

Example:
    >>> model = HookedVLM.from_hf(build_tiny("qwen3_vl").model)
    >>> [i.hook for i in model.layout(**inputs).injections]
    ['blocks.0.hook_deepstack', 'blocks.1.hook_deepstack']
"""

from __future__ import annotations

from typing import Any

import torch
from transformer_lens.hook_points import HookPoint
from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

from hooked_vlm.families._tiny import TinyModel, eager, fill_zeros
from hooked_vlm.families.qwen2_vl import (
    QWEN_GRIDS,
    QWEN_IDS,
    Qwen2VLArchitectureAdapter,
    qwen_batch,
    qwen_family,
    qwen_text,
)
from hooked_vlm.layout import Injection

HOOK = "hook_deepstack"


class _DeepStackMergerBridge(GeneralizedComponent):
    """One DeepStack patch merger (``model.visual.deepstack_merger_list.{k}``)."""

    is_list_item: bool = True


class Qwen3VLAdapter(Qwen2VLArchitectureAdapter):
    """Qwen3-VL: Qwen2-VL's recomputed attention with Qwen3's q/k norms, hooked DeepStack
    mergers (``vision_encoder.deepstack_mergers.{k}``)."""

    vision_mlp = {"in": "linear_fc1", "out": "linear_fc2"}
    vision_pos_embed = "pos_embed"
    qk_norm = True
    qkv_bias = False

    def _vision_submodules(self) -> dict[str, GeneralizedComponent]:
        return {
            **super()._vision_submodules(),
            "deepstack_mergers": _DeepStackMergerBridge(name="deepstack_merger_list"),
        }


def _injections(config: Any) -> tuple[Injection, ...]:
    n = len(config.vision_config.deepstack_visual_indexes)
    return tuple(Injection(layer, f"blocks.{layer}.{HOOK}") for layer in range(n))


def install_deepstack_hooks(bridge: Any) -> None:
    """Fire ``blocks.{l}.hook_deepstack`` where HF adds DeepStack features after block ``l``.

    HF's text model adds ``deepstack_visual_embeds[l]`` at the visual positions in its own
    loop (``_deepstack_process``, called for layers 0, 1, ... in order). The method is replaced
    on the instance by one that scatters the features into a ``[batch, pos, d_model]`` tensor
    (zero elsewhere), lets the hook point see or edit it, and adds it: ``hidden + added`` equals
    HF's in-place addition bit for bit (``x + 0 == x``).
    """
    text_model = bridge.original_model.model.language_model
    points = []
    for injection in _injections(bridge.original_model.config):
        point = HookPoint()
        bridge.blocks[injection.layer].hook_deepstack = point
        points.append(point)
    calls = {"layer": 0}

    def restart(_module: Any, _args: Any, _kwargs: Any) -> None:
        calls["layer"] = 0

    def process(
        hidden: torch.Tensor, visual_pos_masks: torch.Tensor, visual_embeds: torch.Tensor
    ) -> torch.Tensor:
        layer = calls["layer"]
        calls["layer"] += 1
        added = torch.zeros_like(hidden)
        added[visual_pos_masks.to(hidden.device)] = visual_embeds.to(hidden.device, hidden.dtype)
        return hidden + points[layer](added)

    text_model.register_forward_pre_hook(restart, with_kwargs=True)
    text_model._deepstack_process = process
    bridge.clear_hook_registry()
    bridge._initialize_hook_registry()


def tiny_qwen3_vl(seed: int = 0, n_layers: int = 2) -> TinyModel:
    """Qwen3VLForConditionalGeneration: 4 px patches, 2x2 merge, DeepStack from vision blocks
    0 and 1 into decoder blocks 0 and 1; interleaved M-RoPE, q/k norms.

    Images of 16x16 and 16x24 px -> 2x2 and 2x3 merged tokens (as the tiny Qwen2-VL).
    """
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    torch.manual_seed(seed)
    ids = QWEN_IDS
    patch, temporal, merge = 4, 2, 2
    vision = {"depth": 2, "hidden_size": 32, "intermediate_size": 37, "num_heads": 4,
              "out_hidden_size": 64, "patch_size": patch, "spatial_merge_size": merge,
              "temporal_patch_size": temporal, "num_position_embeddings": 16,
              "deepstack_visual_indexes": [0, 1]}
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2],
            "mrope_interleaved": True}
    config = Qwen3VLConfig(
        text_config=qwen_text(n_layers, head_dim=16, rope_parameters=rope),
        vision_config=vision, image_token_id=ids["image_id"], video_token_id=ids["video_id"],
        vision_start_token_id=ids["boi_id"], vision_end_token_id=ids["eoi_id"],
    )
    model = fill_zeros(Qwen3VLForConditionalGeneration(eager(config)), seed)
    inputs, extras = qwen_batch(QWEN_GRIDS, 3 * temporal * patch**2, seed, merge)
    return TinyModel("qwen3_vl", model, inputs, 4, extras)


FAMILY = qwen_family(
    "Qwen3VLForConditionalGeneration", "Qwen3-VL", Qwen3VLAdapter, tiny_qwen3_vl,
    notes="<|vision_start|> (BOI) + <|image_pad|> x (h*w/4) + <|vision_end|> (EOI); "
    "interleaved M-RoPE; DeepStack adds vision features at the image positions after decoder "
    "blocks 0..k-1 (blocks.{l}.hook_deepstack). A video is one <|vision_start|> "
    "<|video_pad|> x (h*w/4) <|vision_end|> span per frame, after its timestamp.",
    gate="`eoi` (`<|vision_end|>`); DeepStack also writes image features straight into "
    "the image positions of the first decoder blocks",
    frame_spans=True,
    injections=_injections,
    install=install_deepstack_hooks,
)
