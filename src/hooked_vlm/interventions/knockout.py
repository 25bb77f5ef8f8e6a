"""Attention knockout: cut chosen (query, key) edges in chosen layers and heads.

Modes (named, never implied):

``"mask"``
    −inf added to the pre-softmax scores, through the layer's additive attention mask
    (``hook_attn_mask``, see :mod:`hooked_vlm.fast_attention`): each row renormalises over the
    keys it keeps, and the layer keeps its fused SDPA kernel unless something else watches its
    pattern. The removed keys leave no trace, so cutting every text→image edge makes text
    independent of the image exactly.
``"zero"``
    zero the post-softmax weights (``hook_pattern``) without renormalising: the Narrow Gate
    code. Rows then sum to 1 minus the removed mass, and the softmax denominator still carries
    one scalar per head and row from the removed keys (a small leak of image information).

Edges are those the model's own mask allows: causal (query ``q`` attends to keys ``k <= q``)
plus, where the layout names bidirectional attention blocks (Gemma 3's images, PaliGemma's
prefix, Molmo 2's image tokens), every pair inside a block; everything else in HF's mask
(padding, sliding windows, the blocks themselves) is left exactly as HF computes it. During
generation with a KV cache each decode step's query is a text query (see :mod:`.selectors`),
so the same hooks apply the knockout at every step.

Example:
    >>> layout = model.layout(**inputs)
    >>> hooks = knockout(model, layout, queries="text", keys="eoi", mode="zero")
    >>> logits = model.run_with_hooks(inputs, fwd_hooks=hooks)
    >>> tokens = model.generate(inputs, max_new_tokens=20, fwd_hooks=hooks)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool
from torch import Tensor

from hooked_vlm.interventions._common import (
    Hooks,
    InterventionError,
    check_heads,
    check_layers,
    check_mode,
    editable_attention,
)
from hooked_vlm.interventions.selectors import Positions, Selector, check_batch, resolve
from hooked_vlm.layout import TokenLayout

if TYPE_CHECKING:
    from hooked_vlm.model import HookedVLM

KNOCKOUT_MODES = ("mask", "zero")


def knockout(
    model: HookedVLM,
    layout: TokenLayout,
    queries: Selector,
    keys: Selector,
    layers: int | Sequence[int] | None = None,
    heads: int | Sequence[int] | None = None,
    mode: str = "mask",
    *,
    seed: int = 0,
) -> Hooks:
    """Hooks that cut every ``queries``→``keys`` edge in ``layers`` × ``heads`` (None: all).

    ``mode``: ``"mask"`` (−inf before the softmax, rows renormalise) or ``"zero"`` (post-softmax
    zeroing, rows not renormalised). ``seed`` seeds ``"random_image:k"`` selectors.

    Example:
        >>> hooks = knockout(model, layout, "text", "random_image:10", mode="zero", seed=3)
    """
    check_mode(mode, KNOCKOUT_MODES, "knockout")
    layer_list = check_layers(model, layers)
    head_list = check_heads(model, heads)
    editable_attention(model, layer_list, f"knockout mode {mode!r}")
    q_pos, k_pos = resolve(layout, queries, seed=seed), resolve(layout, keys, seed=seed)
    point = "hook_attn_mask" if mode == "mask" else "hook_pattern"
    n_heads = model.cfg.n_heads

    def hook(tensor: Tensor, hook: object) -> Tensor:
        check_batch(q_pos, tensor.shape[0], "knockout")
        start = model.state.query_start
        if mode == "zero":
            return _zero_pattern(tensor, edge_mask(tensor, q_pos, k_pos, head_list, start))
        per_head = tensor.expand(-1, n_heads, -1, -1)  # the mask is shared by every head
        return mask_additive(per_head, edge_mask(per_head, q_pos, k_pos, head_list, start))

    return Hooks(
        [(f"blocks.{layer}.attn.{point}", hook) for layer in layer_list],
        start=q_pos.first_reaching(k_pos),
    )


def edge_mask(
    scores: Tensor,
    queries: Positions,
    keys: Positions,
    heads: Sequence[int] | None = None,
    query_start: int | None = None,
) -> Bool[Tensor, "batch head q k"]:
    """Edges to cut for an attention tensor ``[batch, head, q, k]``: selected (query, key)
    pairs the model lets attend, i.e. causal ones and, within a bidirectional attention block
    (Gemma 3's images, PaliGemma's prefix), every pair of the block.

    The query rows start at absolute position ``query_start`` (a KV-cached step or a suffix run
    has cached positions before them; default ``k - q``); the key columns are the last ``k``
    positions up to the last query (a sliding-window layer's cache keeps only its window).
    """
    _, n_heads, n_q, n_k = scores.shape
    device = scores.device
    q0 = n_k - n_q if query_start is None else query_start
    k0 = q0 + n_q - n_k
    rows = queries.window(q0, q0 + n_q, device)
    cols = keys.window(k0, k0 + n_k, device)
    allowed = torch.ones(n_q, n_k, dtype=torch.bool, device=device).tril(diagonal=n_k - n_q)[None]
    q_blocks = queries.block_window(q0, q0 + n_q, device)
    if q_blocks is not None:
        k_blocks = queries.block_window(k0, k0 + n_k, device)
        same = (q_blocks[:, :, None] == k_blocks[:, None, :]) & (q_blocks >= 0)[:, :, None]
        allowed = allowed | same
    edges = (rows[:, :, None] & cols[:, None, :] & allowed)[:, None]
    if heads is None:
        return edges
    head_mask = torch.zeros(n_heads, dtype=torch.bool, device=device)
    head_mask[list(heads)] = True
    return edges & head_mask[None, :, None, None]


def mask_additive(mask: Tensor, edges: Tensor) -> Tensor:
    """−inf on ``edges`` of an additive mask; refuse rows left with no key at all."""
    masked = mask.masked_fill(edges, float("-inf"))
    blocked = torch.finfo(mask.dtype).min
    dead = (masked <= blocked).all(-1) & ~(mask <= blocked).all(-1)  # padding rows stay
    if bool(dead.any()):
        b, h, q = (int(i[0]) for i in dead.nonzero(as_tuple=True))
        row = q + mask.shape[-1] - mask.shape[-2]
        raise InterventionError(
            f"knockout mode 'mask' removes every key of query position {row} (example {b}, "
            f"head {h}): its softmax is undefined. Keep at least one key per "
            "query (e.g. exclude the query's own position), or use mode 'zero'."
        )
    return masked


def _zero_pattern(pattern: Tensor, edges: Tensor) -> Tensor:
    return pattern.masked_fill(edges, 0.0)
