"""The two tiny architectures, built from HF config objects with random (seeded) weights.

Both decoders share one shape (:data:`DECODER`): d_model 128, 4 layers, 4 heads (no GQA),
SwiGLU MLP of width 344 (LLaMA's 8/3 ratio), RoPE. Images become 64 tokens in both:

- tiny-native (``ChameleonForConditionalGeneration``): HF's own VQ-VAE encoder turns a 64 px
  image into 8 x 8 codes of a 512-entry codebook; the codes enter as tokens between BOI
  ``<racm3:break>`` and EOI ``<eoss>``. The encoder has no residual blocks in its down path
  (``num_res_blocks=0``: three strided convolutions, then a mid block with attention at 8 x 8),
  which keeps it cheap enough to train on a CPU.
- tiny-llava (``LlavaForConditionalGeneration``): a 2-layer CLIP tower (width 128, 8 px patches,
  64 patch features with the "default" strategy, its last layer), a 2-layer GELU projector and
  the Llama decoder.

Example:
    >>> model = build_model("tiny-llava", seed=0)
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from hooked_vlm.training.vocab import N_CODES, PATCH_SIZE, is_native, vocabulary

DECODER = {
    "hidden_size": 128, "intermediate_size": 344, "num_hidden_layers": 4,
    "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 512,
    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
}
IMAGE_SIZE = 64


def build_model(name: str, seed: int = 0, layers: int = 4, vq_dim: int = 16) -> PreTrainedModel:
    """A randomly initialised tiny native model (tiny-native, tiny-gate) or tiny-llava (fp32,
    SDPA attention, train mode) with a decoder of ``layers`` layers (and, native, VQ codebook
    vectors of ``vq_dim`` dimensions)."""
    vocab = vocabulary(name)
    decoder = {**DECODER, "num_hidden_layers": layers}
    torch.manual_seed(seed)
    model = _native(vocab, decoder, vq_dim) if is_native(name) else _llava(vocab, decoder)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(model.generation_config, key, DECODER[key])
    return model.train()


def _native(vocab: dict[str, int], decoder: dict[str, int], vq_dim: int) -> PreTrainedModel:
    from transformers import ChameleonConfig, ChameleonForConditionalGeneration
    from transformers.models.chameleon.configuration_chameleon import ChameleonVQVAEConfig

    vq = ChameleonVQVAEConfig(
        embed_dim=vq_dim, num_embeddings=N_CODES, latent_channels=32, resolution=IMAGE_SIZE,
        base_channels=32, channel_multiplier=[1, 1, 1, 1], num_res_blocks=0,
        attn_resolutions=[],
    )
    config = ChameleonConfig(
        vocab_size=len(vocab), vq_config=vq.to_dict(), vocabulary_map=vocab, **decoder,
    )
    return ChameleonForConditionalGeneration(config)


def _llava(vocab: dict[str, int], decoder: dict[str, int]) -> PreTrainedModel:
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    vision = CLIPVisionConfig(
        hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=128,
    )
    text = LlamaConfig(vocab_size=len(vocab), **decoder)
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=vocab["<image>"],
        vision_feature_layer=-1, vision_feature_select_strategy="default",
    )
    return LlavaForConditionalGeneration(config)
