"""Qwen2-VL (``Qwen2VLForConditionalGeneration``) for TransformerLens' bridge, patterns editable.

TL ships an adapter for Qwen2.5-VL only, and it keeps HF's attention (``hook_pattern`` observes,
edits are discarded). In transformers 5.x Qwen2-VL's text rotary module already folds the three
M-RoPE streams (temporal/height/width sections) into one ``(cos, sin)`` pair per position, so the
decoder layer hands its attention ordinary rotate-half cos/sin: TL's
``PositionEmbeddingsAttentionBridge`` (which recomputes attention, and so honours pattern edits)
reproduces it exactly. The q/k/v projections carry biases.

The vision tower (``model.visual``) runs all images as one patch sequence, attending within
each image (``cu_seqlens``) under a 2D rotary embedding. :class:`Qwen2VLVisionAttentionBridge`
recomputes it as one block-diagonal pattern ``[1, heads, patches, patches]`` (zero across
images), so ``vision_encoder.blocks.{l}.attn.hook_pattern`` is editable too. The patch merger
(``model.visual.merger``) is the ``vision_projector``.

Note: HF stores M-RoPE deltas on the model (``model.model.rope_deltas``) during a forward; the
next call with ``input_ids`` recomputes them, a cached decode step reuses them.

Example:
    >>> ArchitectureAdapterFactory.register_adapter(
    ...     "Qwen2VLForConditionalGeneration", Qwen2VLArchitectureAdapter)
    >>> bridge = build_bridge_from_module(model, "Qwen2VLForConditionalGeneration",
    ...                                   hf_config=model.config)
"""

from typing import Any

import torch
from transformer_lens.hook_points import HookPoint
from transformer_lens.model_bridge.architecture_adapter import ArchitectureAdapter
from transformer_lens.model_bridge.generalized_components import (
    AttentionBridge,
    BlockBridge,
    EmbeddingBridge,
    LinearBridge,
    RMSNormalizationBridge,
    RotaryEmbeddingBridge,
    UnembeddingBridge,
    VisionProjectionBridge,
)
from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent
from transformer_lens.model_bridge.generalized_components.position_embeddings_attention import (
    PositionEmbeddingsAttentionBridge,
)
from transformer_lens.model_bridge.generalized_components.qwen3_5_vision_encoder import (
    Qwen3_5VisionBlockBridge,
    Qwen3_5VisionEncoderBridge,
)
from transformer_lens.model_bridge.generalized_components.vision_encoder import (
    vision_attention_config,
)


class Qwen2VLVisionAttentionBridge(AttentionBridge):
    """Qwen2-VL vision attention recomputed over all patches with a block-diagonal mask.

    ``hidden_states`` is ``[patches, d]`` (no batch axis). ``hook_q`` / ``hook_k`` / ``hook_v``
    fire on ``[patches, heads, d_head]`` before the 2D rotary; ``hook_attn_scores`` /
    ``hook_pattern`` are ``[1, heads, patches, patches]`` with scores of ``-inf`` (pattern 0)
    between patches of different images.
    """

    hook_aliases = {"hook_z": "o.hook_in"}

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(
            name,
            config,
            submodules={"qkv": LinearBridge(name="qkv"), "o": LinearBridge(name="proj")},
            is_causal=False,
            requires_attention_mask=False,
        )
        self.hook_q, self.hook_k, self.hook_v = HookPoint(), HookPoint(), HookPoint()

    def setup_hook_compatibility(self) -> None:
        """No per-head q/k/v reshaping: q, k and v come out of one fused ``qkv`` linear."""

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Attention of ``hidden_states`` ``[patches, d]`` within each image of ``cu_seqlens``."""
        from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb_vision

        hf_attn: Any = self.original_component
        if hf_attn is None:
            raise RuntimeError(f"Original component not set for {self.name}.")
        hidden = kwargs.pop("hidden_states") if "hidden_states" in kwargs else args[0]
        cu_seqlens = kwargs["cu_seqlens"]
        cos, sin = kwargs["position_embeddings"]
        hidden = self.hook_in(hidden)
        n, n_heads = hidden.shape[0], hf_attn.num_heads
        q, k, v = self.qkv(hidden).reshape(n, 3, n_heads, -1).permute(1, 0, 2, 3).unbind(0)
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
        q, k, v = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))
        scores = torch.matmul(q, k.transpose(-1, -2)) * hf_attn.scaling
        image = torch.repeat_interleave(
            torch.arange(len(cu_seqlens) - 1, device=hidden.device), cu_seqlens.diff()
        )
        same_image = image[:, None] == image[None, :]
        scores = scores.masked_fill(~same_image, float("-inf"))
        scores = self.hook_attn_scores(scores)
        pattern = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        pattern = self.hook_pattern(pattern)
        z = torch.matmul(pattern, v)[0].transpose(0, 1).reshape(n, -1)
        return self.hook_out(self.o(z))


class Qwen2VLArchitectureAdapter(ArchitectureAdapter):
    """Qwen2-VL: Qwen2 decoder with recomputed M-RoPE attention, hooked vision tower."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.cfg.is_multimodal = True
        self._set_rms_rotary_defaults()
        self.cfg.attn_implementation = "eager"
        self.cfg.default_prepend_bos = False  # Qwen tokenizers have no BOS
        self._extract_vision_dims(cfg)
        vision_cfg = getattr(cfg, "vision_config", None)
        if vision_cfg is not None:  # the tower's width is embed_dim; hidden_size is the LM's
            self.cfg.vision_hidden_size = getattr(vision_cfg, "embed_dim", None)
        self.weight_processing_conversions = {
            **self._qkvo_weight_conversions(include_biases=True),
        }
        block = Qwen3_5VisionBlockBridge(
            name="blocks",
            submodules={
                "attn": Qwen2VLVisionAttentionBridge(
                    name="attn", config=vision_attention_config(self.cfg)
                ),
                "mlp": GeneralizedComponent(
                    name="mlp",
                    submodules={"in": LinearBridge(name="fc1"), "out": LinearBridge(name="fc2")},
                ),
            },
        )
        self.component_mapping = {
            "vision_encoder": Qwen3_5VisionEncoderBridge(
                name="model.visual",
                config=self.cfg,
                submodules={
                    "pos_embed": GeneralizedComponent(name="rotary_pos_emb"),
                    "blocks": block,
                },
            ),
            "vision_projector": VisionProjectionBridge(name="model.visual.merger"),
            "embed": EmbeddingBridge(name="model.language_model.embed_tokens"),
            "rotary_emb": RotaryEmbeddingBridge(name="model.language_model.rotary_emb"),
            "blocks": BlockBridge(
                name="model.language_model.layers",
                submodules={
                    "ln1": RMSNormalizationBridge(name="input_layernorm", config=self.cfg),
                    "ln2": RMSNormalizationBridge(name="post_attention_layernorm", config=self.cfg),
                    "attn": PositionEmbeddingsAttentionBridge(
                        name="self_attn",
                        config=self.cfg,
                        submodules={
                            "q": LinearBridge(name="q_proj"),
                            "k": LinearBridge(name="k_proj"),
                            "v": LinearBridge(name="v_proj"),
                            "o": LinearBridge(name="o_proj"),
                        },
                    ),
                    "mlp": self._gated_mlp(),
                },
            ),
            "ln_final": RMSNormalizationBridge(name="model.language_model.norm", config=self.cfg),
            "unembed": UnembeddingBridge(name="lm_head", config=self.cfg),
        }
