"""HF-style model inputs: a dict of tensors that also carries its :class:`TokenLayout`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from hooked_vlm.layout import TokenLayout


class VLMInputs(dict):
    """``dict`` of input tensors (``input_ids``, ``pixel_values``, ...) plus ``.layout``.

    Unpacks like the processor's output (``model(**inputs)``), so it works with HF too.
    """

    layout: TokenLayout | None = None

    def to(self, device: torch.device | str) -> VLMInputs:
        moved = VLMInputs({k: v.to(device) for k, v in self.items()})
        moved.layout = self.layout
        return moved


def split_inputs(
    inputs: Mapping[str, Any] | None,
    kwargs: dict[str, Any],
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[Tensor, dict[str, Any]]:
    """Merge a mapping and keywords, move tensors to the model, return ``(input_ids, rest)``.

    Floating-point image tensors are cast to the model's dtype (as HF's processors expect
    the caller to do).
    """
    merged = {**(dict(inputs) if inputs is not None else {}), **kwargs}
    ids = merged.pop("input_ids", None)
    if ids is None:
        raise ValueError(
            "no input_ids: call the model with HF-style inputs, e.g. "
            "model(input_ids=..., pixel_values=..., attention_mask=...) or model(**inputs) "
            "with inputs = model.prepare(images, prompts)."
        )
    if not isinstance(ids, Tensor) or ids.ndim != 2 or ids.is_floating_point():
        raise ValueError(f"input_ids must be an integer tensor [batch, pos]; got {_describe(ids)}")
    rest = {}
    for key, value in merged.items():
        if isinstance(value, Tensor):
            value = value.to(device)
            if value.is_floating_point() and key.startswith("pixel_values"):
                value = value.to(dtype)
        rest[key] = value
    return ids.to(device), rest


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__
