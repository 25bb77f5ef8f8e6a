"""Janus (``JanusForConditionalGeneration``, understanding path) for TransformerLens' bridge.

Janus is a SigLIP-shaped vision tower (``model.vision_model``), an MLP aligner
(``model.aligner``) and a Llama decoder (``model.language_model``) with ``lm_head`` on top. The
decoder is TL's Llama adapter re-prefixed to ``model.language_model.``; the tower reuses TL's
SigLIP bridges (same ``embeddings`` / ``encoder.layers`` / ``post_layernorm`` layout) with the
output projection named ``projection_layer``.

TL's SigLIP attention keeps HF's computation and discards ``hook_pattern`` edits with a
warning. Here the tower's attention is recomputed by
:class:`~hooked_vlm.adapters.vision.EditableVisionAttentionBridge`, so
editing ``vision_encoder.encoder_layers.{l}.attn.hook_pattern`` changes the image features.
The VQ image-generation side (``vqmodel``, ``generation_*``) is left unmapped.

Example:
    >>> ArchitectureAdapterFactory.register_adapter(
    ...     "JanusForConditionalGeneration", JanusArchitectureAdapter)
    >>> bridge = build_bridge_from_module(model, "JanusForConditionalGeneration",
    ...                                   hf_config=model.config)
"""

from typing import Any

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
