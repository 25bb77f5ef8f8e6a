"""Jobs for the engine tests, importable by Ray workers and subprocesses (module-level, so
they pickle by reference): a tiny head-attribution run, and one whose worker is killed once."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from hooked_vlm import HookedVLM
from hooked_vlm.attribution import AttributionConfig, AttributionJob, Evaluator, Example, Unit
from hooked_vlm.studies.results import write_atomic
from hooked_vlm.testing.tiny import build_tiny

# 3 examples x (3 train + 1 held-out + 1 reference chunks) = 15 units; the dataset-mean
# baseline is a tensor every worker shares through the store
CONFIG = AttributionConfig(n_masks=48, n_heldout=16, chunk_size=16, batch_size=8,
                           mode="baseline_kv", baseline="mean")


def tiny_evaluator(n_examples: int = 3) -> Evaluator:
    """A tiny random LLaVA and ``n_examples`` seeded pictures under one prompt: the same
    model, examples and config in every process that calls it."""
    tiny = build_tiny("llava")
    model = HookedVLM.from_hf(tiny.model)
    first = tiny.example(0)
    gen = torch.Generator().manual_seed(1)
    examples = [
        Example({**first, "pixel_values": torch.randn(first["pixel_values"].shape, generator=gen)},
                answer=9, label=i % 2)
        for i in range(n_examples)
    ]
    return Evaluator(model, examples, CONFIG)


def tiny_job(store: str | os.PathLike) -> AttributionJob:
    return AttributionJob(partial(tiny_evaluator), str(store))


@dataclass(frozen=True)
class KilledOnce(AttributionJob):
    """The tiny job, except that the first attempt at ``victim`` writes its process id to
    ``marker`` and sleeps until someone kills the process."""

    victim: Unit | None = None
    marker: str = ""

    def __call__(self):
        return partial(_signal_then_run, super().__call__(), self.victim, self.marker)


def _signal_then_run(worker, victim: Unit, marker: str, unit: Unit) -> bool:
    if unit == victim and not Path(marker).exists():
        write_atomic(Path(marker), str(os.getpid()))
        time.sleep(300)  # killed here, mid-unit
    return worker(unit)
