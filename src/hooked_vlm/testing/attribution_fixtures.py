"""A tiny head-attribution run that every process builds identically: for the engine tests
and ``benchmarks/scale.py`` (a Ray worker or a Slurm-array process calls it and gets the same
model, examples and config as the driver).

Example:
    >>> evaluator = tiny_evaluator(n_examples=3)
    >>> store = open_store(tmp / "store", evaluator)
    >>> run(evaluator, store)
    15
"""

from __future__ import annotations

import torch

from hooked_vlm.attribution import AttributionConfig, Evaluator, Example
from hooked_vlm.model import HookedVLM
from hooked_vlm.testing.tiny import build_tiny

# 3 train chunks + 1 held-out + 1 reference chunk per example; the dataset-mean baseline is a
# tensor every worker shares through the store
TINY_CONFIG = AttributionConfig(n_masks=48, n_heldout=16, chunk_size=16, batch_size=8,
                                mode="baseline_kv", baseline="mean")


def tiny_evaluator(n_examples: int = 3, config: AttributionConfig = TINY_CONFIG) -> Evaluator:
    """A tiny random LLaVA and ``n_examples`` seeded pictures under one prompt (labels
    alternate 0/1): the same in every process that calls it."""
    tiny = build_tiny("llava")
    model = HookedVLM.from_hf(tiny.model)
    first = tiny.example(0)
    gen = torch.Generator().manual_seed(1)
    examples = [
        Example({**first, "pixel_values": torch.randn(first["pixel_values"].shape, generator=gen)},
                answer=9, label=i % 2)
        for i in range(n_examples)
    ]
    return Evaluator(model, examples, config)
