"""Steering: replace or add a vector in the residual stream at [EOI] (or any positions).

Works in a forward and in generation: a position of the prompt (EOI) is edited in the first,
full step and reaches later steps through the KV cache; text selectors also reach each new
token (see :mod:`.selectors`).

Example:
    >>> v = class_mean_difference(eoi_resid, labels, "cat", "dog")   # [d_model]
    >>> hooks = steer(model, layout, v, positions="eoi", layers=[8], mode="add", scale=4.0)
    >>> tokens = model.generate(inputs, max_new_tokens=10, fwd_hooks=hooks)
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from hooked_vlm.interventions._common import Hooks, InterventionError, check_layers, check_mode
from hooked_vlm.interventions.selectors import Selector, check_batch, resolve
from hooked_vlm.layout import TokenLayout
from hooked_vlm.validation import check_finite as finite_or_raise

if TYPE_CHECKING:
    from hooked_vlm.model import HookedVLM

STEERING_MODES = ("add", "replace")


def steer(
    model: HookedVLM,
    layout: TokenLayout,
    vector: Float[Tensor, " d_model"] | Float[Tensor, "batch d_model"],
    positions: Selector = "eoi",
    layers: int | Sequence[int] = 0,
    mode: str = "add",
    *,
    scale: float = 1.0,
    point: str = "hook_resid_pre",
    check_finite: bool = True,
) -> Hooks:
    """Hooks on ``blocks.{layer}.{point}`` that add ``scale * vector`` or replace by it.

    ``vector`` is one ``[d_model]`` for all examples or one per example ``[batch, d_model]``.
    A vector holding NaN/inf raises unless ``check_finite=False``.

    Example:
        >>> hooks = steer(model, layout, eoi_of_source, mode="replace", layers=range(4, 8))
    """
    check_mode(mode, STEERING_MODES, "steering")
    layer_list = check_layers(model, layers)
    pos = resolve(layout, positions)
    vector = torch.as_tensor(vector)
    if vector.shape[-1] != model.cfg.d_model or vector.ndim not in (1, 2):
        raise InterventionError(
            f"steering vector must be [d_model] or [batch, d_model] with d_model = "
            f"{model.cfg.d_model}, got {tuple(vector.shape)}."
        )
    vector = (scale * vector.to(model.device, model.dtype)).reshape(-1, 1, model.cfg.d_model)
    if check_finite:
        finite_or_raise(vector, "steering vector (times scale)")

    def fn(resid: Tensor, hook: Any) -> Tensor:
        check_batch(pos, resid.shape[0], "steer")
        start = model.state.query_start
        sel = pos.window(start, start + resid.shape[1], resid.device)[..., None]
        edited = resid + vector if mode == "add" else vector.expand_as(resid)
        return torch.where(sel, edited, resid)

    return Hooks([(f"blocks.{layer}.{point}", fn) for layer in layer_list], start=pos.first())


def class_mean_difference(
    activations: Float[Tensor, "n d_model"],
    labels: Sequence[Hashable] | Tensor,
    a: Hashable,
    b: Hashable,
) -> Float[Tensor, " d_model"]:
    """Mean activation of class ``a`` minus that of class ``b`` (e.g. EOI residuals).

    Example:
        >>> class_mean_difference(cache_eoi, ["cat", "dog", "cat"], "cat", "dog")
    """
    labels = labels.tolist() if isinstance(labels, Tensor) else list(labels)
    means = []
    for cls in (a, b):
        rows = [i for i, y in enumerate(labels) if y == cls]
        if not rows:
            raise InterventionError(f"no activation has label {cls!r}; labels: {set(labels)}.")
        means.append(activations[rows].mean(0))
    return means[0] - means[1]
