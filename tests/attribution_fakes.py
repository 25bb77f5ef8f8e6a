"""Fake "models" with planted head effects for the attribution tests (and their subprocesses).

A :class:`PlantedEvaluator` answers ``evaluate(example, keep_masks)`` with a known function of
the masks plus noise that is a pure function of (example, mask), so it behaves like a model run
(deterministic, order-free) at no cost.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from hooked_vlm.attribution import AttributionConfig, MaskStore

Effect = Callable[[int, np.ndarray], np.ndarray]  # (example, masks [n, L, H]) -> [n]


class PlantedEvaluator:
    """Implements :class:`hooked_vlm.attribution.MaskEvaluator` over a planted ``effect``."""

    def __init__(
        self,
        config: AttributionConfig,
        effect: Effect,
        n_layers: int = 4,
        n_heads: int = 8,
        n_examples: int = 3,
        noise: float = 0.0,
        delay: float = 0.0,
    ) -> None:
        self.config, self.effect = config, effect
        self.n_layers, self.n_heads, self.n_examples = n_layers, n_heads, n_examples
        self.noise, self.delay = noise, delay

    def evaluate(self, example: int, masks: np.ndarray) -> np.ndarray:
        masks = np.asarray(masks, dtype=bool)
        time.sleep(self.delay)
        noise = np.array([_noise(example, m) for m in masks]) * self.noise
        return self.effect(example, masks) + noise

    def describe(self) -> dict[str, Any]:
        return {"config": self.config.to_json(), "n_layers": self.n_layers,
                "n_heads": self.n_heads, "n_examples": self.n_examples, "model": "planted"}

    def prepare(self, store: MaskStore) -> None:
        pass


def _noise(example: int, mask: np.ndarray) -> float:
    key = np.packbits(mask).tobytes() + example.to_bytes(8, "little")
    digest = hashlib.blake2b(key, digest_size=8)
    return float(np.random.default_rng(int.from_bytes(digest.digest(), "little")).normal())


def additive(beta: np.ndarray, intercept: float = 1.0) -> Effect:
    """y = intercept + Σ β_h m_h, with ``beta [n_examples, L, H]``."""

    def effect(example: int, masks: np.ndarray) -> np.ndarray:
        return intercept + masks.reshape(len(masks), -1) @ beta[example].ravel()

    return effect


def or_groups(groups: list[list[tuple[int, int]]], size: float, beta: np.ndarray) -> Effect:
    """Additive ``beta`` plus ``size`` for each group of which at least one head is kept
    (redundant heads: any one of them carries the information)."""
    base = additive(beta)

    def effect(example: int, masks: np.ndarray) -> np.ndarray:
        y = base(example, masks)
        for group in groups:
            rows, cols = zip(*group, strict=True)
            y = y + size * masks[:, list(rows), list(cols)].any(1)
        return y

    return effect


def planted_beta(n_examples: int, n_layers: int, n_heads: int, strong: list[tuple[int, int]],
                 seed: int = 0) -> np.ndarray:
    """Small random effects everywhere (|β| <= 0.05), 2..3 on the ``strong`` heads."""
    rng = np.random.default_rng(seed)
    beta = rng.uniform(-0.05, 0.05, (n_examples, n_layers, n_heads))
    for layer, head in strong:
        beta[:, layer, head] = rng.uniform(2, 3, n_examples)
    return beta


def run_store_worker(path: str, first: int, last: int, delay: float) -> None:
    """Subprocess entry: evaluate units ``first .. last-1`` of the standard planted run."""
    evaluator = standard_planted(delay=delay)
    from hooked_vlm.attribution import open_store, run, units

    store = open_store(path, evaluator)
    run(evaluator, store, units(evaluator)[first:last])


def standard_planted(delay: float = 0.0) -> PlantedEvaluator:
    """The planted run the store tests share (also rebuilt inside subprocesses)."""
    config = AttributionConfig(n_masks=300, n_heldout=60, alpha=0.5, seed=3, chunk_size=20)
    beta = planted_beta(3, 4, 8, strong=[(1, 2), (3, 5)])
    return PlantedEvaluator(config, additive(beta), noise=0.01, delay=delay)
