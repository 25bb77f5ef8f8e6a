"""Chameleon (``ChameleonForConditionalGeneration``): a native model, images as VQ codes.

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

Layout: ``<racm3:break>`` (BOI) + VQ codes + ``<eoss>`` (EOI).

Example:
    >>> tiny = build_tiny("chameleon")   # 32 px images -> 8x8 = 64 VQ codes
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformer_lens.model_bridge.generalized_components import (
    BlockBridge,
    NormalizationBridge,
    RMSNormalizationBridge,
)
from transformer_lens.model_bridge.supported_architectures.llama import (
    LlamaArchitectureAdapter,
)

from hooked_vlm.families._tiny import TEXT_VOCAB, TinyModel, finish, seeded, words
from hooked_vlm.families.base import Architecture, n_images, roles
from hooked_vlm.layout import SpecialTokens
from hooked_vlm.layout.patch_grid import SquarePatches


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


def vocab_id(config: Any, name: str) -> int | None:
    """The id of token ``name`` in a native model's ``vocabulary_map`` (None if absent)."""
    return (config.vocabulary_map or {}).get(name)


def _tokens(config: Any) -> SpecialTokens:
    return SpecialTokens(
        image=vocab_id(config, "<image>"),
        bos=config.bos_token_id,
        boi=vocab_id(config, "<racm3:break>"),
        eoi=vocab_id(config, "<eoss>"),
        pad=config.pad_token_id,
    )


def _side(config: Any) -> int:
    """VQ codes per side of the ``resolution`` px crop, downsampled once per level but the last."""
    vq = config.vq_config
    return vq.resolution // 2 ** (len(vq.channel_multiplier) - 1)


def _placeholders(config: Any, extras: dict[str, Any]) -> list[int]:
    return [_side(config) ** 2] * n_images(extras)


# ------------------------------------------------------------------------- tiny instances


def chameleon_vocabulary(n_codes: int, words: Sequence[str] | None = None) -> dict[str, int]:
    """A Chameleon vocabulary map whose ``IMGIMG…Z`` names encode the VQ code index.

    Chameleon maps VQ code ``c`` to the token named ``IMGIMG`` + digits of ``c`` written with
    letters A-J + ``Z``; a map that does not encode the index sends every code to one token.
    Text ``words`` follow the codes (default: ``w0`` ... ``w47``).

    Example:
        >>> vocab = chameleon_vocabulary(16, ["red", "circle"])
        >>> vocab["IMGIMGBAZ"], vocab["red"]   # code 10, first word
        (16, 22)
    """
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<racm3:break>": 3, "<eoss>": 4, "<image>": 5}
    for code in range(n_codes):
        letters = "".join(chr(ord("A") + int(d)) for d in str(code))
        vocab[f"IMGIMG{letters}Z"] = len(vocab)
    for word in [f"w{i}" for i in range(TEXT_VOCAB)] if words is None else words:
        if word in vocab:
            raise ValueError(f"word {word!r} clashes with a special or image-code token")
        vocab[word] = len(vocab)
    return vocab


def tiny_chameleon(seed: int = 0, swin_norm: bool = False, n_layers: int = 2) -> TinyModel:
    """ChameleonForConditionalGeneration: 32 px images -> 8x8 = 64 VQ codes; q/k-norm."""
    from transformers import ChameleonConfig, ChameleonForConditionalGeneration
    from transformers.models.chameleon.configuration_chameleon import ChameleonVQVAEConfig

    torch.manual_seed(seed)
    n_codes = 16
    vocab = chameleon_vocabulary(n_codes)
    vq = ChameleonVQVAEConfig(
        embed_dim=8, num_embeddings=n_codes, latent_channels=8, resolution=32, base_channels=32,
        channel_multiplier=[1, 1, 2], num_res_blocks=1, attn_resolutions=[],
    )
    config = ChameleonConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=n_layers,
        num_attention_heads=4, num_key_value_heads=4, vq_config=vq.to_dict(),
        vocabulary_map=vocab, swin_norm=swin_norm, max_position_embeddings=256,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    config._attn_implementation = "eager"
    model = finish(ChameleonForConditionalGeneration(config), seed)
    n_img, first_word = 64, vocab["w0"]
    gen = seeded(seed + 1)
    rows = [[1, *words(3, first_word, gen), 3, *[5] * n_img, 4, *words(5, first_word, gen)]
            for _ in range(2)]
    inputs = {
        "input_ids": torch.tensor(rows),
        "attention_mask": torch.ones(2, len(rows[0]), dtype=torch.long),
        "pixel_values": torch.randn(2, 3, 32, 32, generator=gen),
    }
    name = "chameleon-swin" if swin_norm else "chameleon"
    return TinyModel(name, model, inputs, n_img)


def tiny_chameleon_swin(seed: int = 0, n_layers: int = 2) -> TinyModel:
    """:func:`tiny_chameleon` with ``swin_norm=True`` (Chameleon-30B's norm placement)."""
    return tiny_chameleon(seed, swin_norm=True, n_layers=n_layers)


FAMILY = Architecture(
    "ChameleonForConditionalGeneration",
    native=True,
    family="Chameleon",
    special_tokens=_tokens,
    patch_rule=lambda config: SquarePatches(_side(config)),
    vision_hooks="",
    config_passthrough=("swin_norm",),
    notes="<racm3:break> (BOI) + VQ codes + <eoss> (EOI).",
    gate="`eoi` (`<eoss>`)",
    placeholders_per_image=_placeholders,
    roles=roles("boi", "eoi"),
    adapters={"ChameleonForConditionalGeneration": ChameleonArchitectureAdapter},
    tiny={"chameleon": tiny_chameleon, "chameleon-swin": tiny_chameleon_swin},
)
