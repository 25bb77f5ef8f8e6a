"""Shared pieces of the intervention factories: errors, the ``Hooks`` list, index checks.

Every factory returns :class:`Hooks`, a plain list of ``(hook_name, fn)`` pairs (so it works
with ``run_with_hooks``, ``hooks()`` and ``generate``) that also records ``start``, the first
absolute position it can change. Everything before ``start`` is untouched, which is what lets
:mod:`hooked_vlm.interventions.prefix` reuse the prefix's keys and values.

Example:
    >>> hooks = knockout(model, layout, "text", "eoi") + steer(model, layout, v, layers=[3])
    >>> hooks.start   # the smaller of the two starts
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from transformer_lens.model_bridge.generalized_components import (
    PositionEmbeddingsAttentionBridge,
)

if TYPE_CHECKING:
    from hooked_vlm.model import HookedVLM

HookFn = Callable[..., Any]


class InterventionError(ValueError):
    """An intervention was asked for that is malformed or that the model cannot honour."""


class Hooks(list):
    """``[(hook_name, fn), ...]`` plus ``start``: the first absolute position it may change.

    Adding two ``Hooks`` concatenates them and keeps the smaller ``start``.
    """

    def __init__(self, items: Iterable[tuple[str, HookFn]] = (), start: int = 0) -> None:
        super().__init__(items)
        self.start = start

    def __add__(self, other: Iterable[tuple[str, HookFn]]) -> Hooks:  # type: ignore[override]
        other_start = other.start if isinstance(other, Hooks) else 0
        return Hooks([*self, *other], min(self.start, other_start))


def _indices(value: object, what: str, bound: str) -> list[int]:
    """``value`` as a list of ints: an int, a list/tuple/range of ints or an integer tensor.
    Bools, floats and strings raise instead of being cast to an index."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    items = list(value) if isinstance(value, (list, tuple, range)) else [value]
    if not all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in items):
        raise InterventionError(
            f"{what} must be an int or a list of ints ({bound}), got {value!r}: a float or a "
            "string is refused rather than read as an index."
        )
    return [int(i) for i in items]


def check_layers(model: HookedVLM, layers: int | Sequence[int] | None) -> list[int]:
    """Layer indices as a sorted list; ``None`` means every layer. Negative indices count back."""
    n = model.cfg.n_layers
    if layers is None:
        return list(range(n))
    layers = _indices(layers, "layers", f"0..{n - 1}, or negative from the end")
    bad = [layer for layer in layers if not -n <= layer < n]
    if bad:
        raise InterventionError(
            f"layer indices {bad} are out of range: this model has {n} layers (0..{n - 1}, "
            "or negative from the end)."
        )
    if not layers:
        raise InterventionError("layers is empty: pass None for every layer, or some indices.")
    return sorted({layer % n for layer in layers})


def check_heads(model: HookedVLM, heads: int | Sequence[int] | None) -> list[int] | None:
    """Head indices as a sorted list, or ``None`` for every head."""
    if heads is None:
        return None
    n = model.cfg.n_heads
    heads = _indices(heads, "heads", f"0..{n - 1}")
    bad = [h for h in heads if not 0 <= h < n]
    if bad or not heads:
        raise InterventionError(
            f"head indices {bad or '[]'} are invalid: this model has {n} query heads per "
            f"layer (0..{n - 1})."
        )
    return sorted(set(heads))


def check_mode(mode: str, modes: Sequence[str], what: str) -> None:
    if mode not in modes:
        raise InterventionError(
            f"unknown {what} mode {mode!r}; accepted: {', '.join(repr(m) for m in modes)}."
        )


def editable_attention(model: HookedVLM, layers: Sequence[int], needs: str) -> Any:
    """Raise unless each layer's attention is recomputed by the bridge (edits reach it).

    Returns the attention bridge of the first layer (for its HF module's constants).
    """
    for layer in layers:
        attn = model.bridge.blocks[layer].attn
        if not isinstance(attn, PositionEmbeddingsAttentionBridge):
            raise InterventionError(
                f"{needs} edits attention scores/patterns, but layer {layer} of "
                f"{model.cfg.architecture} runs {type(attn).__name__}, which keeps HF's own "
                "attention and discards such edits. Use a head-output intervention "
                "(head_ablation mode 'zero'/'mean') or patching on this architecture."
            )
    return model.bridge.blocks[layers[0]].attn
