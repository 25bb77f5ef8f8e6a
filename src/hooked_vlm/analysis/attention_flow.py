"""Cross-modal attention contribution (Narrow Gate, analysis 3), reducible on the fly.

For layer ``l`` and image-side key ``j`` (image tokens, row/EOL/EOF tokens and EOI; BOS and BOI
excluded), ``f_j^l = sum_h sum_{i in text after the image} A^{l,h}[i, j]``, accumulated over
the dataset and normalised so that ``sum_j f_j^l = 1``.

Three pieces, so that no full pattern needs to be kept:

1. :func:`flow_masks` - which queries (text after the example's last image-side key) and which
   keys (``image_and_eoi``) count, from a :class:`TokenLayout`;
2. :func:`text_to_image_mass` - the per-layer reduction, cheap enough for a pattern hook;
3. :func:`flow_contributions` - from accumulated masses per layer and key to the shares and the
   paper's plot categories (EOI, last image token, keys above a threshold, internal image).

Attention is not the only way image information moves: Qwen3-VL's DeepStack adds vision
features to the image positions after its first decoder blocks (``layout.injections``,
:func:`injected_layers`); the flow measures what text reads *by attention* from keys that,
from those layers on, also carry the injected features.

Example:
    >>> queries, keys = flow_masks(layout)
    >>> masses = {}
    >>> def hook(pattern, hook):   # on blocks.{l}.attn.hook_pattern
    ...     masses[hook.layer()] = text_to_image_mass(pattern, queries, keys)
    >>> model.run_with_hooks(inputs, fwd_hooks=[(lambda n: n.endswith("hook_pattern"), hook)])
    >>> per_key = torch.stack([image_key_values(masses[l], keys) for l in sorted(masses)])
    >>> flow = flow_contributions(per_key.sum(1), *key_categories(layout))
    >>> flow.eoi, flow.last_image, flow.internal_image
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from hooked_vlm.layout import Injection, TokenLayout


def flow_masks(layout: TokenLayout) -> tuple[Bool[Tensor, "batch pos"], Bool[Tensor, "batch pos"]]:
    """``(query_mask, key_mask)``: text after the last image-side key, and ``image_and_eoi``."""
    keys = layout.mask("image_and_eoi")
    positions = torch.arange(keys.shape[1], device=keys.device)
    last_key = torch.where(keys, positions, -1).amax(1)
    queries = layout.mask("text") & (positions[None] > last_key[:, None])
    missing = torch.nonzero(~queries.any(1) | ~keys.any(1)).flatten().tolist()
    if missing:
        raise ValueError(
            f"example(s) {missing} have no image or no text after their last image: the flow "
            "needs both (put the prompt text after the image)."
        )
    return queries, keys


def text_to_image_mass(
    pattern: Float[Tensor, "batch head query key"],
    query_mask: Bool[Tensor, "batch query"],
    key_mask: Bool[Tensor, "batch key"],
) -> Float[Tensor, "batch key"]:
    """Attention mass from the selected queries to each selected key, summed over heads.

    ``mass[b, j] = sum_h sum_{i: query_mask[b, i]} pattern[b, h, i, j]`` for ``key_mask[b, j]``,
    0 elsewhere. Pure and allocation-light, for use inside a ``hook_pattern`` hook (the caller
    keeps ``[batch, key]`` per layer instead of the pattern).
    """
    b, _, q, k = pattern.shape
    if query_mask.shape != (b, q) or key_mask.shape != (b, k):
        raise ValueError(
            f"pattern {tuple(pattern.shape)} needs query_mask [{b}, {q}] and key_mask "
            f"[{b}, {k}]; got {tuple(query_mask.shape)} and {tuple(key_mask.shape)}"
        )
    per_query = pattern.sum(1, dtype=torch.float32)  # [b, q, k]: no float copy of all heads
    mass = torch.einsum("bqk,bq->bk", per_query, query_mask.to(pattern.device, torch.float32))
    return mass * key_mask.to(pattern.device)


def image_key_values(
    values: Float[Tensor, "batch pos"], key_mask: Bool[Tensor, "batch pos"]
) -> Float[Tensor, "batch n_keys"]:
    """The values at each example's image-side keys, in order: ``[batch, n_keys]``.

    Lines examples up by key offset (0 = first image-side key), so masses of examples with the
    same image size can be summed over a dataset whatever their prompt lengths.
    """
    counts = key_mask.sum(1)
    if len(set(counts.tolist())) != 1:
        raise ValueError(
            f"examples have {counts.tolist()} image-side keys: accumulate images of one size "
            "together (one key count per run), or reduce each example on its own."
        )
    return values[key_mask.to(values.device)].reshape(len(values), -1)


def key_categories(layout: TokenLayout) -> tuple[Bool[Tensor, " n_keys"], Bool[Tensor, " n_keys"]]:
    """Which image-side key offsets are EOI and which the last image token, for every example."""
    _, keys = flow_masks(layout)
    eoi = image_key_values(layout.mask("eoi").to(torch.float32), keys).bool()
    last = image_key_values(layout.mask("last_image").to(torch.float32), keys).bool()
    if not (bool((eoi == eoi[0]).all()) and bool((last == last[0]).all())):
        raise ValueError(
            "EOI / last image token sit at different key offsets across examples: the images "
            "of one run must share their layout."
        )
    return eoi[0], last[0]


@dataclass(frozen=True)
class FlowContributions:
    """Per layer: the share ``f_j`` of each image-side key and the paper's plot categories.

    ``eoi + last_image + salient.sum(-1) + internal_image == 1`` at every layer, where
    ``salient`` holds the shares of the other keys above the threshold (0 elsewhere).
    """

    shares: Float[Tensor, "layer n_keys"]
    eoi: Float[Tensor, " layer"]
    last_image: Float[Tensor, " layer"]
    salient: Float[Tensor, "layer n_keys"]
    internal_image: Float[Tensor, " layer"]
    threshold: float
    # Layers after which image features enter the image-side keys' residual stream outside
    # attention (Qwen3-VL's DeepStack, ``layout.injections``): from the next layer on, the
    # keys the flow measures also carry those features.
    injected_after: tuple[int, ...] = ()


def flow_contributions(
    masses: Float[Tensor, "layer n_keys"],
    eoi_keys: Bool[Tensor, " n_keys"],
    last_image_keys: Bool[Tensor, " n_keys"],
    threshold: float = 0.01,
    injections: Sequence[Injection] = (),
) -> FlowContributions:
    """Normalise accumulated masses per layer and split them into the plot categories.

    Args:
        masses: text->image mass per layer and image-side key, summed over the dataset (e.g.
            ``image_key_values(text_to_image_mass(...), keys).sum(0)`` accumulated per layer).
        eoi_keys, last_image_keys: which key offsets are EOI / the last image token.
        threshold: other keys whose share exceeds it are reported on their own (``salient``).
        injections: ``layout.injections``: where image features enter the residual stream
            outside attention; recorded as ``injected_after`` so a plot can mark them.
    """
    n_keys = masses.shape[-1:]
    if masses.ndim != 2 or eoi_keys.shape != n_keys or last_image_keys.shape != n_keys:
        raise ValueError(
            f"masses must be [layer, n_keys] with key masks [n_keys]; got "
            f"{tuple(masses.shape)}, {tuple(eoi_keys.shape)}, {tuple(last_image_keys.shape)}"
        )
    total = masses.sum(1, keepdim=True)
    if not bool((total > 0).all()):
        raise ValueError("a layer has zero text->image mass: nothing to normalise")
    shares = masses / total
    eoi = (shares * eoi_keys).sum(1)
    last = (shares * last_image_keys).sum(1)
    others = shares * ~(eoi_keys | last_image_keys)
    salient = torch.where(others > threshold, others, torch.zeros_like(others))
    internal = others.sum(1) - salient.sum(1)
    injected = injected_layers(injections)
    return FlowContributions(shares, eoi, last, salient, internal, threshold, injected)


def injected_layers(injections: Sequence[Injection]) -> tuple[int, ...]:
    """The decoder layers after which image features are added to the image positions outside
    attention (sorted, once each): ``()`` for every family but Qwen3-VL, whose DeepStack adds
    vision features after blocks 0, 1, 2 (``blocks.{l}.hook_deepstack``).

    Example:
        >>> injected_layers(layout.injections)   # (0, 1, 2) for Qwen3-VL-8B
    """
    return tuple(sorted({i.layer for i in injections}))


@dataclass(frozen=True)
class AttentionFlow:
    """Share of text->image attention per key, per example ``[batch, pos]`` (0 off the image)."""

    shares: Float[Tensor, "batch pos"]
    eoi_share: float  # mean over examples of the EOI keys' total share (0 without EOI)
    last_image_share: float  # same for the last image position of each image


def cross_modal_attention(
    pattern: Float[Tensor, "batch head query key"], layout: TokenLayout
) -> AttentionFlow:
    """How text queries after the image split their attention over image-side keys.

    One layer's full pattern, each example normalised on its own, then averaged.

    Example:
        >>> _, cache = model.run_with_cache(inputs, names_filter=lambda n: n.endswith("pattern"))
        >>> flow = cross_modal_attention(cache["blocks.5.attn.hook_pattern"], layout)
        >>> flow.eoi_share, flow.last_image_share
    """
    queries, keys = flow_masks(layout.to(pattern.device))
    mass = text_to_image_mass(pattern, queries, keys)
    shares = mass / mass.sum(1, keepdim=True).clamp_min(1e-30)
    eoi = (shares * layout.mask("eoi").to(shares.device)).sum(1).mean().item()
    last = (shares * layout.mask("last_image").to(shares.device)).sum(1).mean().item()
    return AttentionFlow(shares, eoi, last)
