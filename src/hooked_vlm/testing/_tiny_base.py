"""Shared pieces of the tiny random VLM builders (:mod:`hooked_vlm.testing.tiny`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedModel

TEXT_VOCAB = 48  # plain "word" ids appended after the special and image-code ids


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
        pixels, Qwen2-VL's flattened patches (``image_grid_thw``) or stacked tiles (InternVL).

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
        return out


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _jitter_norms(model: torch.nn.Module, seed: int) -> None:
    """Move norm weights off 1.0 so a norm applied at the wrong place changes the numbers."""
    gen = _seeded(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn(p.shape, generator=gen))


def _finish(model: PreTrainedModel, seed: int) -> PreTrainedModel:
    _jitter_norms(model, seed)
    return model.eval()


def _text(n: int, offset: int, gen: torch.Generator) -> list[int]:
    return (offset + torch.randint(0, TEXT_VOCAB, (n,), generator=gen)).tolist()
