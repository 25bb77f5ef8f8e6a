"""Forward passes the stages share: residual vectors gathered in hooks, last-position outputs.

Nothing here keeps a whole activation: hooks pick the few vectors a stage needs (one text and
one image position, the gate, the last token) as each layer runs.

Example:
    >>> picks = {"gate": lambda resid: token_vectors(resid, layout.mask("eoi"))}
    >>> vectors = residuals_at(model, inputs, picks, layers=[0, 1, 2])   # {"gate": [B, 3, d]}
    >>> last = LastPosition(model, inputs, layout, start=first_text_after_image)
    >>> resid, logits = last.run(knockout(model, layout, "text", "eoi"))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from hooked_vlm.interventions import Hooks, PrefixCache
from hooked_vlm.layout import TokenLayout
from hooked_vlm.model import HookedVLM

Picker = Callable[[Float[Tensor, "batch pos d_model"]], Float[Tensor, "batch d_model"]]


def residuals_at(
    model: HookedVLM,
    inputs: Mapping[str, Any],
    picks: Mapping[str, Picker],
    layers: Sequence[int],
) -> dict[str, np.ndarray]:
    """One forward; ``{name: [batch, len(layers), d_model]}`` of each picker at each layer's
    output (``hook_resid_post``: the final norm not applied)."""
    found: dict[str, dict[int, Tensor]] = {name: {} for name in picks}

    def hook(resid: Tensor, hook: Any) -> None:
        for name, pick in picks.items():
            found[name][hook.layer()] = pick(resid).float().cpu()

    model.run_with_hooks(
        inputs, fwd_hooks=[(f"blocks.{layer}.hook_resid_post", hook) for layer in layers]
    )
    return {
        name: torch.stack([per_layer[layer] for layer in layers], dim=1).numpy()
        for name, per_layer in found.items()
    }


class LastPosition:
    """Last-position residual (last layer) and logits of ``inputs`` under many interventions,
    each recomputing only the positions from ``start`` on (the clean prefix is reused)."""

    def __init__(
        self, model: HookedVLM, inputs: Mapping[str, Any], layout: TokenLayout, start: int
    ) -> None:
        self.model = model
        self.prefix = PrefixCache.build(model, inputs, start)
        self.last = torch.stack([p[-1] for p in layout.select("last")])
        self.seq_len = layout.seq_len

    def run(
        self, hooks: Hooks | None = None
    ) -> tuple[Float[Tensor, "batch d_model"], Float[Tensor, "batch vocab"]]:
        """``(residual after the last block, logits)`` at each example's last position."""
        rows = torch.arange(len(self.last))
        index = self.last - self.prefix.start
        kept: dict[str, Tensor] = {}

        def keep(resid: Tensor, hook: Any) -> None:
            kept["resid"] = resid[rows, index.to(resid.device)].float().cpu()

        name = f"blocks.{self.model.cfg.n_layers - 1}.hook_resid_post"
        observer = Hooks([(name, keep)], start=self.seq_len)  # observes: changes nothing
        logits = self.prefix.run(observer if hooks is None else hooks + observer)
        return kept["resid"], logits[rows, index.to(logits.device)].float().cpu()
