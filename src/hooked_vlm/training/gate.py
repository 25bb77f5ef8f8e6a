"""Training a native model whose image reaches the text only through EOI (``tiny-gate``).

The Narrow Gate study needs a positive control: a model known to have a gate, on which it must
find one. Two parts, both on the library's own interventions and hook points:

- **the route**: every training forward bars the text after the image from the image tokens
  (EOI kept) in every layer, with ``knockout(model, layout, "text_after_image", "image",
  mode="mask")``: answers can only use what EOI collected from the image;
- **the closed door**: a masked edge gets no gradient, so a model trained under the mask alone
  still attends to the image tokens once the mask is gone, with query-key scores nothing
  trained, and reads noise there (trained from scratch so, tiny-native's recipe answered 0.10 of
  classification questions unmasked, below chance, and 0.47 masked). So each step also runs a
  few rows *without* the mask and adds ``penalty`` times their mean text->image attention mass
  (every layer and head, queries after the image) to the loss, which teaches the text queries
  to leave the image tokens alone. The answers' loss comes from the masked forward only, so
  nothing rewards reading the image tokens directly.

The trained weights are a plain HF checkpoint: nothing of the mask ships with them.

Example:
    >>> gate = GateTraining(model, processor, model_config, penalty=10.0)
    >>> losses = run_loop(model, params, next_batch, steps=100, lr=1e-3,
    ...                   around=gate.around, penalty=gate.penalty)
    >>> gate.masses[-1]          # text->image attention mass of the last unmasked rows
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from hooked_vlm.interventions import knockout
from hooked_vlm.interventions.selectors import resolve

QUERIES, KEYS = "text_after_image", "image"


class GateTraining:
    """The mask (:meth:`around`) and the attention penalty (:meth:`penalty`) of one run."""

    def __init__(
        self, model: Any, processor: Any, model_config: Any, penalty: float, rows: int = 4
    ) -> None:
        from hooked_vlm.model import HookedVLM

        self.model, self.processor = model, processor
        self.vlm = HookedVLM.from_hf(model, processor, model_config=model_config)
        self.weight, self.rows = penalty, rows
        self.masses: list[float] = []

    def layout(self, batch: dict[str, Tensor]) -> Any:
        ids = as_placeholders(self.model, self.processor, batch["input_ids"])
        return self.vlm.layout(ids, attention_mask=batch["attention_mask"])

    def around(self, batch: dict[str, Tensor]) -> AbstractContextManager[Any]:
        """Within it, the text after the image cannot attend to the image tokens."""
        layout = self.layout(batch)
        return self.vlm.hooks(knockout(self.vlm, layout, QUERIES, KEYS, mode="mask"))

    def penalty(self, batch: dict[str, Tensor]) -> Tensor:
        """``penalty`` x the mean text->image attention mass of the first ``rows`` rows,
        computed without the mask (a differentiable scalar; 0 when ``penalty`` is 0)."""
        if not self.weight:
            return torch.zeros(())
        rows = {k: v[: self.rows] for k, v in batch.items() if k != "labels"}
        layout = self.layout(rows)
        queries = resolve(layout, QUERIES).mask  # [b, s]
        keys = layout.mask(KEYS)
        masses: list[Tensor] = []

        def mass(pattern: Tensor, hook: Any) -> Tensor:
            on_image = (pattern * keys[:, None, None, :]).sum(-1)  # [b, head, query]
            weights = queries[:, None, :].expand_as(on_image)
            masses.append(on_image[weights].mean())
            return pattern

        names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(self.vlm.cfg.n_layers)]
        with self.vlm.hooks([(name, mass) for name in names]):
            self.model.model(**rows)
        total = torch.stack(masses).mean()
        self.masses.append(float(total.detach()))
        return self.weight * total


def as_placeholders(model: Any, processor: Any, ids: Int[Tensor, "b s"]) -> Int[Tensor, "b s"]:
    """``ids`` with every VQ code token put back to the processor's image placeholder id.

    Training batches hold the image's VQ code tokens where the processor put placeholders
    (:mod:`hooked_vlm.training.batches`); the token layout finds an image by its placeholders,
    so it reads these ids (the positions are the same).

    Example:
        >>> layout = vlm.layout(as_placeholders(model, processor, batch["input_ids"]))
    """
    codes = torch.tensor(model.model.vocabulary_mapping.image_tokens)
    return torch.where(torch.isin(ids, codes), processor.image_token_id, ids)
