"""Janus (``JanusForConditionalGeneration``, understanding path) for TransformerLens' bridge.

Janus is a SigLIP-shaped vision tower (``model.vision_model``), an MLP aligner
(``model.aligner``) and a Llama decoder (``model.language_model``) with ``lm_head`` on top. The
decoder is TL's Llama adapter re-prefixed to ``model.language_model.``; the tower reuses TL's
SigLIP bridges (same ``embeddings`` / ``encoder.layers`` / ``post_layernorm`` layout) with the
output projection named ``projection_layer``.

TL's SigLIP attention keeps HF's computation and discards ``hook_pattern`` edits with a
warning. Here the tower's attention is recomputed by :class:`EditableVisionAttentionBridge`, so
editing ``vision_encoder.encoder_layers.{l}.attn.hook_pattern`` changes the image features.
The VQ image-generation side (``vqmodel``, ``generation_*``) is left unmapped.

Example:
    >>> ArchitectureAdapterFactory.register_adapter(
    ...     "JanusForConditionalGeneration", JanusArchitectureAdapter)
    >>> bridge = build_bridge_from_module(model, "JanusForConditionalGeneration",
    ...                                   hf_config=model.config)
"""

from typing import Any

import torch
from transformer_lens.model_bridge.generalized_components import (
    AttentionBridge,
    LinearBridge,
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


class EditableVisionAttentionBridge(AttentionBridge):
    """Bidirectional ViT attention recomputed step by step so ``hook_pattern`` edits apply.

    Mirrors HF's eager ViT attention (``q/k/v`` projections, the wrapped module's ``q_norm`` /
    ``k_norm`` over the full width where it has them (InternViT), ``softmax(q k^T * scale +
    mask) v``, output projection). ``hook_attn_scores`` fires before the softmax,
    ``hook_pattern`` after it.
    """

    def __init__(self, name: str, config: Any, out_proj: str = "out_proj") -> None:
        super().__init__(
            name,
            config,
            submodules={
                "q": LinearBridge(name="q_proj"),
                "k": LinearBridge(name="k_proj"),
                "v": LinearBridge(name="v_proj"),
                "o": LinearBridge(name=out_proj),
            },
            is_causal=False,
            requires_attention_mask=False,
        )

    def forward(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention of ``hidden_states`` ``[batch, pos, d]``; returns ``(output, pattern)``."""
        hf_attn: Any = self.original_component
        if hf_attn is None:
            raise RuntimeError(f"Original component not set for {self.name}.")
        hidden = kwargs.pop("hidden_states") if "hidden_states" in kwargs else args[0]
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        hidden = self.hook_in(hidden)
        batch, pos, _ = hidden.shape
        n_heads, d_head = hf_attn.num_heads, hf_attn.head_dim

        def heads(x: torch.Tensor, norm: str | None = None) -> torch.Tensor:
            if norm is not None and getattr(hf_attn, norm, None) is not None:
                x = getattr(hf_attn, norm)(x)
            return x.reshape(batch, pos, n_heads, d_head).transpose(1, 2)

        q = heads(self.q(hidden), "q_norm")
        k = heads(self.k(hidden), "k_norm")
        v = heads(self.v(hidden))
        scale = getattr(hf_attn, "scale", getattr(hf_attn, "scaling", d_head**-0.5))
        scores = torch.matmul(q, k.transpose(-1, -2)) * scale
        if mask is not None:
            scores = scores + mask.to(scores.dtype)
        scores = self.hook_attn_scores(scores)
        pattern = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        pattern = self.hook_pattern(pattern)
        z = torch.matmul(pattern, v).transpose(1, 2).reshape(batch, pos, n_heads * d_head)
        return self.hook_out(self.o(z)), pattern


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
