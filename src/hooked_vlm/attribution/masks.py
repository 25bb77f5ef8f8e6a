"""Keep-masks over attention heads: 1 keeps a head, 0 ablates it (COAR's convention).

A mask set gives masks by index, ``masks(start, stop) -> bool [n, n_layers, n_heads]``, and
every mask is a pure function of its index (and the set's description): any shard of a run can
recompute its masks anywhere, in any order. Sets:

:class:`RandomMasks`
    each head ablated with probability ``alpha`` (independently), or exactly ``k`` heads
    ablated; mask ``i`` is drawn from ``numpy.random.SeedSequence([seed, stream, i])``. Fresh
    held-out masks are the same set on another ``stream`` (:meth:`RandomMasks.held_out`).
:class:`ReferenceMasks`
    mask 0 keeps every head (the clean run), mask 1 ablates every head.
:class:`LeaveOneOutMasks`
    mask ``i`` ablates head ``i`` (layer-major: ``i = layer * n_heads + head``) only.

Example:
    >>> train = RandomMasks(n_layers=32, n_heads=32, n=50_000, alpha=0.5, seed=0)
    >>> train.masks(0, 64).shape          # (64, 32, 32), bool
    >>> test = train.held_out(n=1000)     # stream 1: disjoint from every training mask index
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from hooked_vlm.settings import ConfigError

HELD_OUT_STREAM = 1


class MaskError(ConfigError):
    """A mask set was described with impossible parameters."""


@dataclass(frozen=True)
class RandomMasks:
    """``n`` random keep-masks: P(ablate) = ``alpha`` per head, or exactly ``k`` ablated.

    Give exactly one of ``alpha`` (0 < alpha < 1) and ``k`` (0 <= k <= heads).
    """

    n_layers: int
    n_heads: int
    n: int
    alpha: float | None = 0.5
    k: int | None = None
    seed: int = 0
    stream: int = 0

    def __post_init__(self) -> None:
        heads = self.n_layers * self.n_heads
        if heads <= 0 or self.n < 0:
            raise MaskError(
                f"need n_layers, n_heads > 0 and n >= 0, got {self.n_layers}, {self.n_heads}, "
                f"{self.n}."
            )
        if (self.alpha is None) == (self.k is None):
            raise MaskError(
                "give exactly one of alpha (each head ablated with probability alpha) and k "
                f"(exactly k heads ablated); got alpha={self.alpha}, k={self.k}."
            )
        if self.alpha is not None and not 0 < self.alpha < 1:
            raise MaskError(
                f"alpha is the ablation probability, strictly between 0 and 1; got {self.alpha}."
            )
        if self.k is not None and not 0 <= self.k <= heads:
            raise MaskError(f"k must be between 0 and the number of heads ({heads}), got {self.k}.")

    @property
    def size(self) -> int:
        return self.n

    def mask(self, index: int) -> np.ndarray:
        """Mask ``index`` as a bool array ``[n_layers, n_heads]`` (True keeps the head)."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.stream, index]))
        heads = self.n_layers * self.n_heads
        if self.alpha is not None:
            keep = rng.random(heads) >= self.alpha
        else:
            keep = np.ones(heads, dtype=bool)
            keep[rng.choice(heads, size=self.k, replace=False)] = False
        return keep.reshape(self.n_layers, self.n_heads)

    def masks(self, start: int, stop: int) -> np.ndarray:
        """Masks ``start .. stop-1``: bool ``[stop - start, n_layers, n_heads]``."""
        _check_range(start, stop, self.n)
        out = np.empty((stop - start, self.n_layers, self.n_heads), dtype=bool)
        for row, index in enumerate(range(start, stop)):
            out[row] = self.mask(index)
        return out

    def held_out(self, n: int) -> RandomMasks:
        """``n`` fresh masks from the same distribution on the held-out stream."""
        if self.stream == HELD_OUT_STREAM:
            raise MaskError("these masks are already the held-out stream.")
        return replace(self, n=n, stream=HELD_OUT_STREAM)

    def describe(self) -> dict[str, Any]:
        return {"kind": "random", **asdict(self)}


@dataclass(frozen=True)
class ReferenceMasks:
    """Mask 0 keeps every head, mask 1 ablates every head."""

    n_layers: int
    n_heads: int

    @property
    def size(self) -> int:
        return 2

    def masks(self, start: int, stop: int) -> np.ndarray:
        _check_range(start, stop, 2)
        both = np.stack([np.ones((self.n_layers, self.n_heads), dtype=bool),
                         np.zeros((self.n_layers, self.n_heads), dtype=bool)])
        return both[start:stop]

    def describe(self) -> dict[str, Any]:
        return {"kind": "reference", "n_layers": self.n_layers, "n_heads": self.n_heads}


@dataclass(frozen=True)
class LeaveOneOutMasks:
    """Mask ``i`` ablates the single head ``i`` (layer-major order)."""

    n_layers: int
    n_heads: int

    @property
    def size(self) -> int:
        return self.n_layers * self.n_heads

    def masks(self, start: int, stop: int) -> np.ndarray:
        _check_range(start, stop, self.size)
        out = np.ones((stop - start, self.size), dtype=bool)
        out[np.arange(stop - start), np.arange(start, stop)] = False
        return out.reshape(-1, self.n_layers, self.n_heads)

    def describe(self) -> dict[str, Any]:
        return {"kind": "leave_one_out", "n_layers": self.n_layers, "n_heads": self.n_heads}


MaskSet = RandomMasks | ReferenceMasks | LeaveOneOutMasks


def _check_range(start: int, stop: int, size: int) -> None:
    if not 0 <= start <= stop <= size:
        raise MaskError(f"mask range {start}..{stop} is outside this set of {size} masks.")
