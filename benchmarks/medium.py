"""Medium-size random VLMs for benchmarks: big enough that attention and matmuls dominate.

LLaVA: CLIP tower 336 px / 14 px patches -> 576 image features, Llama decoder d_model=512,
8 heads, 8 layers by default. Chameleon: 1024 VQ codes (a 32x32 grid, as the real model),
same decoder.

Example:
    >>> model, inputs = medium_llava(batch=1, text_tokens=26)
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from transformers import (
    ChameleonConfig,
    ChameleonForConditionalGeneration,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
)
from transformers.models.chameleon.configuration_chameleon import ChameleonVQVAEConfig

from hooked_vlm.testing.tiny import chameleon_vocabulary

DECODER = dict(hidden_size=512, intermediate_size=1376, num_attention_heads=8,
               num_key_value_heads=8, max_position_embeddings=2048)


def attribution_arguments(masks_per_example: int, modes: tuple[str, ...]) -> argparse.Namespace:
    """The command line of the head-attribution benchmarks (threads, rounds, model size, masks
    per forward, device, ablation mode), parsed."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--text", type=int, default=22)
    parser.add_argument("--masks-per-example", type=int, default=masks_per_example)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--mode", default="baseline_kv", choices=modes)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return args


def hooked_medium_llava(args: argparse.Namespace) -> tuple[Any, dict[str, torch.Tensor]]:
    """:func:`medium_llava` of ``args.text`` text tokens and ``args.layers`` layers as a
    ``HookedVLM`` on ``args.device``, and its inputs there."""
    from hooked_vlm import HookedVLM

    hf, inputs = medium_llava(text_tokens=args.text, n_layers=args.layers)
    model = HookedVLM.from_hf(hf.to(args.device))
    return model, {k: v.to(args.device) for k, v in inputs.items()}


def medium_llava(
    batch: int = 1, text_tokens: int = 26, attn: str = "eager", seed: int = 0, n_layers: int = 8,
    image_size: int = 336,
) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """LLaVA with (image_size / 14)^2 image tokens (576 by default) and ``text_tokens`` text
    tokens around them."""
    vision = CLIPVisionConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                              num_attention_heads=4, image_size=image_size, patch_size=14)
    text = LlamaConfig(vocab_size=4096, num_hidden_layers=n_layers, **DECODER)
    return _llava(vision, text, batch, text_tokens, attn, seed)


def llava_7b_shape(
    batch: int = 1, text_tokens: int = 26, attn: str = "eager", seed: int = 0, n_layers: int = 32,
    device: str = "cuda", dtype: torch.dtype = torch.bfloat16,
) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """Random weights in LLaVA-1.5-7B's shapes (CLIP ViT-L/14-336 + Llama-2-7B), built on
    ``device`` in ``dtype``: the overhead a real 7B checkpoint would see, with no download."""
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                              num_attention_heads=16, image_size=336, patch_size=14,
                              projection_dim=768)
    text = LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008,
                       num_hidden_layers=n_layers, num_attention_heads=32,
                       num_key_value_heads=32, max_position_embeddings=4096)
    with torch.device(device):
        return _llava(vision, text, batch, text_tokens, attn, seed, dtype)


def _llava(
    vision: CLIPVisionConfig, text: LlamaConfig, batch: int, text_tokens: int, attn: str,
    seed: int, dtype: torch.dtype | None = None,
) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(seed)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=3,
                         vision_feature_layer=-2)
    config._attn_implementation = attn
    model = LlavaForConditionalGeneration._from_config(config, dtype=dtype).eval()
    n_img, before = (vision.image_size // vision.patch_size) ** 2, 4
    ids = torch.randint(8, 4096, (batch, text_tokens + n_img), device="cpu")
    ids[:, 0] = 1
    ids[:, before : before + n_img] = 3
    return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                   "pixel_values": torch.randn(batch, 3, vision.image_size, vision.image_size)}


def medium_chameleon(
    batch: int = 1, text_tokens: int = 26, attn: str = "eager", seed: int = 0, n_layers: int = 8
) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """Chameleon with 1024 VQ image tokens (32x32 grid) between BOI and EOI."""
    torch.manual_seed(seed)
    vocab = chameleon_vocabulary(64)
    vq = ChameleonVQVAEConfig(embed_dim=8, num_embeddings=64, latent_channels=8, resolution=128,
                              base_channels=32, channel_multiplier=[1, 1, 2], num_res_blocks=1,
                              attn_resolutions=[])
    config = ChameleonConfig(vocab_size=len(vocab), vq_config=vq.to_dict(), vocabulary_map=vocab,
                             num_hidden_layers=n_layers, **DECODER)
    config._attn_implementation = attn
    model = ChameleonForConditionalGeneration(config).eval()
    n_img, before = 1024, 4
    words = torch.randint(vocab["w0"], len(vocab), (batch, text_tokens - 2))
    image = torch.tensor([vocab["<racm3:break>"], *[vocab["<image>"]] * n_img, vocab["<eoss>"]])
    ids = torch.cat([words[:, :before], image.expand(batch, -1), words[:, before:]], 1)
    ids[:, 0] = 1
    return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                   "pixel_values": torch.randn(batch, 3, 128, 128)}


MEDIUM = {"llava": medium_llava, "chameleon": medium_chameleon, "llava-7b-shape": llava_7b_shape}
