"""Where one text token's attention goes: per patch of the picture, and shares per key group.

For the explorer (:mod:`hooked_vlm.explorer`): from one layer's pattern, keep only the rows of
the chosen text queries of one example, and of those only

- the weight on each image patch (``[head, query, patch]``, to draw on the picture), and
- the share on each key group of :data:`KEY_GROUPS` (``[head, query, group]``; the groups
  partition the real keys, so each row of shares sums to 1 up to rounding).

Both are reduced inside a ``hook_pattern`` hook, so no ``[layer, head, pos, pos]`` cache is
ever held. The gate is the image's end token (EOI) where the model has one, else the last
image token, as in the Narrow Gate study (:mod:`hooked_vlm.analysis.attention_flow`).

Example:
    >>> groups, queries = key_groups(layout, 0), text_queries(layout, 0)
    >>> patches = layout.select("image_patches")[0]
    >>> weights, shares = query_attention(pattern, 0, queries, patches, groups)
    >>> shares.sum(-1)          # ones: [head, query]
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from hooked_vlm.layout import LayoutError, TokenLayout

KEY_GROUPS = ("image", "gate", "bos", "text", "other")
"""Key groups: the image span without the gate (patches, row / EOL / EOF tokens), the gate
(EOI, else the last image token), BOS, the text (the query itself included), and the rest
(BOI and other structural tokens outside the span)."""


def key_groups(layout: TokenLayout, example: int) -> Bool[Tensor, "group pos"]:
    """One row per :data:`KEY_GROUPS` entry: which positions of ``example`` are in it.

    Example:
        >>> key_groups(layout, 0).sum(1)     # e.g. tensor([64, 1, 1, 9, 1]) for tiny-native
    """
    m = {name: layout.mask(name)[example] for name in ("image", "eoi", "last_image", "bos",
                                                        "text", "boi", "image_meta")}
    gate = m["eoi"] if bool(m["eoi"].any()) else m["last_image"]
    real = m["text"] | m["bos"] | m["boi"] | m["image_meta"] | m["image"] | m["eoi"]
    image = m["image"] & ~gate
    other = real & ~(image | gate | m["bos"] | m["text"])
    return torch.stack([image, gate, m["bos"], m["text"], other])


def text_queries(layout: TokenLayout, example: int) -> Int[Tensor, " query"]:
    """The text positions of ``example`` after its first image position: the queries that can
    read an image (a causal model's earlier text cannot).

    Example:
        >>> text_queries(layout, 0)          # tensor([69, 70, ..., 74])
    """
    image = layout.select("image", allow_empty=True)[example]
    if image.numel() == 0:
        raise LayoutError(f"example {example} has no image: nothing for its text to look at.")
    text = layout.select("text", allow_empty=True)[example]
    queries = text[text > image[0]]
    if queries.numel() == 0:
        raise LayoutError(
            f"example {example} has no text after its first image: put (part of) the prompt "
            "after the image, where its tokens can attend to it."
        )
    return queries


def query_attention(
    pattern: Float[Tensor, "batch head query key"],
    example: int,
    queries: Int[Tensor, " q"],
    patches: Int[Tensor, " p"],
    groups: Bool[Tensor, "group key"],
    query_start: int = 0,
) -> tuple[Float[Tensor, "head q p"], Float[Tensor, "head q group"]]:
    """The rows ``queries`` of ``pattern[example]``: their weight on each patch position and
    their share on each key group (float32).

    ``query_start``: absolute position of the pattern's first query row (0 for a full forward).

    Example:
        >>> weights, shares = query_attention(pattern, 0, queries, patches, key_groups(layout, 0))
    """
    _, _, n_query, n_key = pattern.shape
    if groups.shape[-1] != n_key:
        raise ValueError(
            f"groups cover {groups.shape[-1]} keys but the pattern has {n_key}: build them "
            "from the layout of the inputs this pattern was computed on."
        )
    rows = queries.to(pattern.device) - query_start
    if bool((rows < 0).any() | (rows >= n_query).any()):
        raise ValueError(
            f"queries {queries.tolist()} fall outside the pattern's query rows "
            f"{query_start}..{query_start + n_query - 1}."
        )
    picked = pattern[example][:, rows].float()  # [head, q, key]
    weights = picked[..., patches.to(pattern.device)]
    shares = torch.einsum("hqk,gk->hqg", picked, groups.to(picked.device, torch.float32))
    return weights, shares
