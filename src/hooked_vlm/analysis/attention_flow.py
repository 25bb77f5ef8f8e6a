"""Cross-modal attention contribution (Narrow Gate, analysis 3).

For layer ``l`` and image-side key ``j`` (image tokens, row/EOL/EOF tokens and EOI; BOS and BOI
excluded), ``f_j = sum_h sum_{i in text after the image} A[h, i, j]``, normalised so that
``sum_j f_j = 1`` per example and then averaged over the batch.

Example:
    >>> _, cache = model.run_with_cache(inputs, names_filter=lambda n: n.endswith("hook_pattern"))
    >>> flow = cross_modal_attention(cache["blocks.5.attn.hook_pattern"], layout)
    >>> flow.eoi_share, flow.last_image_share
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import reduce
from jaxtyping import Float
from torch import Tensor

from hooked_vlm.layout import TokenLayout


@dataclass(frozen=True)
class AttentionFlow:
    """Share of text->image attention per key, per example ``[batch, pos]`` (0 off the image)."""

    shares: Float[Tensor, "batch pos"]
    eoi_share: float  # mean over examples of the EOI keys' total share (0 without EOI)
    last_image_share: float  # same for the last image position of each image


def cross_modal_attention(
    pattern: Float[Tensor, "batch head query key"], layout: TokenLayout
) -> AttentionFlow:
    """How text queries after the image split their attention over image-side keys."""
    keys = layout.mask("image_and_eoi").to(pattern.device)
    last_key = torch.where(keys, torch.arange(keys.shape[1], device=keys.device), -1).amax(1)
    positions = torch.arange(keys.shape[1], device=keys.device)
    queries = layout.mask("text").to(pattern.device) & (positions[None] > last_key[:, None])
    if not bool(queries.any(1).all()):
        raise ValueError("every example needs text after its last image to measure the flow")
    per_key = reduce(pattern.float(), "b h q k -> b q k", "sum")
    mass = (per_key * queries[:, :, None]).sum(1) * keys  # [batch, key]
    shares = mass / mass.sum(1, keepdim=True).clamp_min(1e-30)
    eoi = (shares * layout.mask("eoi").to(shares.device)).sum(1).mean().item()
    last = (shares * layout.mask("last_image").to(shares.device)).sum(1).mean().item()
    return AttentionFlow(shares, eoi, last)
