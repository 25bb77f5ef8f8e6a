"""InternVL (``InternVLForConditionalGeneration``, InternVL2.5/3 "-hf") for TransformerLens.

The module layout is LLaVA's (``model.vision_tower``, ``model.multi_modal_projector``,
``model.language_model``, ``lm_head``), so the decoder reuses TL's Llava adapter (a Qwen2 /
Llama-shaped LM with q/k/v biases). The tower is InternViT: each layer (layer scales
``lambda_1``/``lambda_2``, optional q/k-norm) is computed by HF with hooks around it, and its
attention is recomputed by :class:`EditableVisionAttentionBridge`, so
``vision_encoder.encoder_layers.{l}.attn.hook_pattern`` is editable.

Example:
    >>> build_bridge_from_module(model, "InternVLForConditionalGeneration",
    ...                          hf_config=model.config)
"""

from __future__ import annotations

from typing import Any

from transformer_lens.model_bridge.generalized_components import LinearBridge
from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent
from transformer_lens.model_bridge.generalized_components.vision_encoder import (
    vision_attention_config,
)
from transformer_lens.model_bridge.supported_architectures.llava import (
    LlavaArchitectureAdapter,
)

from hooked_vlm.adapters.vision import EditableVisionAttentionBridge, VisionLayerBridge


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
