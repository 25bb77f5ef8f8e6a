"""Shared pieces of the tiny random VLM builders each family module defines.

Tiny models are built from config objects, as transformers' own tests do: they exercise the
real HF classes (vision tower or VQ tokenizer, projector, decoder) at a size that runs in
milliseconds on a CPU. Weights are random: the numbers mean nothing, but every code path (image
features scattered into the sequence, padding, KV cache) is the one a real checkpoint takes.

Each builder returns a :class:`TinyModel`: the HF model (eager attention, fp32, eval mode) and
``inputs``, a batch of two sequences with two *different* images and different text. When the
two images give different token counts, the trailing text is lengthened so both rows have the
same length and no padding is needed. ``extras`` records the image-token layout of each row as
the builder made it (the special ids, ``image_spans`` with BOI/EOI included, per-image grids):
tests read their ground truth there, never from the code under test.

Example:
    >>> tiny = build_tiny("llava")
    >>> logits = tiny.model(**tiny.inputs).logits
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import LlamaConfig, PretrainedConfig, PreTrainedModel

TEXT_VOCAB = 48  # plain "word" ids appended after the special and image-code ids

LLAMA = {
    "hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
    "num_key_value_heads": 2, "max_position_embeddings": 256,
    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
}


@dataclass
class TinyModel:
    """A tiny HF model and a batch of two image+text inputs for it."""

    name: str
    model: PreTrainedModel
    inputs: dict[str, torch.Tensor]
    n_image_tokens: int  # placeholder positions per image in ``inputs``
    extras: dict[str, Any] = field(default_factory=dict)

    def example(self, i: int) -> dict[str, torch.Tensor]:
        """The inputs of example ``i`` alone (one image), whatever the pixel layout: batch-first
        pixels, Qwen-VL's flattened patches (``image_grid_thw``), stacked tiles (InternVL) or
        crops with pooling indices (Molmo 2).

        Example:
            >>> one = build_tiny("qwen2_vl").example(1)
        """
        batch = self.inputs["input_ids"].shape[0]
        pixels = self.inputs["pixel_values"]
        if "image_grid_thw" in self.inputs:
            counts = self.inputs["image_grid_thw"].prod(-1).tolist()
        elif pixels.shape[0] != batch:
            counts = list(self.extras["tiles"])
        else:
            counts = [1] * batch
        start = sum(counts[:i])
        out = {k: v[i : i + 1] for k, v in self.inputs.items() if k != "pixel_values"}
        out["pixel_values"] = pixels[start : start + counts[i]]
        if "image_token_pooling" in self.inputs:  # Molmo 2: pooled tokens index all crops
            grids = self.inputs["image_grids"]
            tokens = (grids[:, 0] * grids[:, 1] + grids[:, 2] * grids[:, 3]).tolist()
            pool = self.inputs["image_token_pooling"][sum(tokens[:i]) : sum(tokens[: i + 1])]
            shift = start * pixels.shape[1]
            out["image_token_pooling"] = torch.where(pool >= 0, pool - shift, pool)
        return out


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def finish(model: PreTrainedModel, seed: int) -> PreTrainedModel:
    """Move norm weights off 1.0 (so a norm applied at the wrong place changes the numbers)
    and switch to eval mode."""
    gen = seeded(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return model.eval()


def fill_zeros(model: PreTrainedModel, seed: int, scale: float = 0.2) -> PreTrainedModel:
    """Give every all-zero parameter (biases, Gemma 3's image projection, ...) random values,
    so that a path that drops one changes the numbers; then :func:`finish`."""
    gen = seeded(seed + 7)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point() and p.numel() > 1 and not p.any():
                p.copy_(scale * torch.randn(p.shape, generator=gen))
    return finish(model, seed)


def words(n: int, offset: int, gen: torch.Generator) -> list[int]:
    """``n`` random word ids from ``offset`` on."""
    return (offset + torch.randint(0, TEXT_VOCAB, (n,), generator=gen)).tolist()


def llama(vocab: int, n_layers: int, **overrides: Any) -> LlamaConfig:
    """A tiny Llama text config."""
    return LlamaConfig(**{**LLAMA, "vocab_size": vocab, "num_hidden_layers": n_layers,
                          **overrides})


def eager(config: PretrainedConfig) -> PretrainedConfig:
    """Ask for eager attention on the config and every sub-config."""
    config._attn_implementation = "eager"
    for key in ("text_config", "vision_config"):
        sub = getattr(config, key, None)
        if sub is not None:
            sub._attn_implementation = "eager"
    return config


def tag(config: PretrainedConfig, **ids: Any) -> PretrainedConfig:
    """Record special ids the HF config has no field for (``boi_token_id``, ...), as loading
    does from the tokenizer for real checkpoints (:func:`hooked_vlm.loading.attach_token_ids`)."""
    for name, value in ids.items():
        setattr(config, name, value)
    return config


def rows(
    blocks: list[list[int]], first_word: int, gen: torch.Generator, head: int = 3
) -> tuple[dict[str, torch.Tensor], list[tuple[int, int]]]:
    """``BOS + head words + image block + words``, the tail lengthened so the rows align.

    Returns ``input_ids``/``attention_mask`` and the ``(start, stop)`` span of each block.
    """
    longest = max(len(b) for b in blocks)
    out, spans = [], []
    for block in blocks:
        lead = [1, *words(head, first_word, gen)]
        spans.append((len(lead), len(lead) + len(block)))
        out.append([*lead, *block, *words(5 + longest - len(block), first_word, gen)])
    ids = torch.tensor(out)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, spans
