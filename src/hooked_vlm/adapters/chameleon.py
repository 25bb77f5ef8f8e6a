"""Chameleon (``ChameleonForConditionalGeneration``) for TransformerLens' bridge.

Chameleon's decoder is Llama-shaped with two differences TL's Llama adapter refuses:

* per-head q/k LayerNorms (``ChameleonLayerNorm``, weight ``[n_heads, d_head]``, statistics over
  ``d_head`` only). They are wrapped so ``hook_q_normed``/``hook_k_normed`` fire; HF's own module
  computes the norm (``use_native_layernorm_autograd``), so numerics are HF's.
* ``swin_norm=True`` (Chameleon-30B) normalises the *output* of attention and MLP before adding it
  to the residual: ``x + ln1(attn(x))``, ``h + ln2(mlp(h))``. Those norms are mapped as
  ``ln1_post``/``ln2_post`` so ``hook_attn_out``/``hook_mlp_out`` are what is added to the
  residual and ``hook_resid_mid`` is the MLP's input, as in the pre-norm layout.

The VQ-VAE image tokenizer (``model.vqmodel``) has no hooks: images become ordinary token ids
before the decoder runs. Reach it through ``HookedVLM.hf_model.model.vqmodel``.
"""

from typing import Any

from transformer_lens.model_bridge.generalized_components import (
    BlockBridge,
    NormalizationBridge,
    RMSNormalizationBridge,
)
from transformer_lens.model_bridge.supported_architectures.llama import (
    LlamaArchitectureAdapter,
)


class ChameleonArchitectureAdapter(LlamaArchitectureAdapter):
    """Llama adapter re-prefixed to ``model.`` with Chameleon's q/k-norm and swin-norm."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.cfg.is_multimodal = True
        swin = bool(getattr(cfg, "swin_norm", False))
        old_blocks = self.component_mapping["blocks"]
        attn = self._qkvo_attention_bridge(
            extra_submodules={
                "q_norm": self._head_norm("q_norm"),
                "k_norm": self._head_norm("k_norm"),
            }
        )
        norms = ("ln1_post", "ln2_post") if swin else ("ln1", "ln2")
        self.component_mapping["blocks"] = BlockBridge(
            name=old_blocks.name,
            submodules={
                norms[0]: RMSNormalizationBridge(name="input_layernorm", config=self.cfg),
                norms[1]: RMSNormalizationBridge(name="post_attention_layernorm", config=self.cfg),
                "attn": attn,
                "mlp": self._gated_mlp(),
            },
        )

    def _head_norm(self, name: str) -> NormalizationBridge:
        return NormalizationBridge(
            name=name, config=self.cfg, use_native_layernorm_autograd=True, uses_rms_norm=False
        )
