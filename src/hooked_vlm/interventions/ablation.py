"""Head ablation with a batch of keep-masks ``[batch, n_layers, n_heads]``: B masks, one forward.

A mask entry of 1 keeps the head, 0 ablates it (COAR's keep-mask convention); mask row ``b``
applies to example ``b`` of the forward, so B masks over one input run as a batch of B copies
(:func:`evaluate_head_masks` does the repeating, chunking and prefix reuse). Modes:

``"zero"``
    the head's output (``hook_z``) at the ``queries`` positions becomes 0. Fractional masks
    interpolate: ``z ← m·z + (1−m)·ref``.
``"mean"``
    the same with ``ref`` a supplied mean of ``hook_z`` (:func:`mean_head_outputs`).
``"baseline_kv"``
    the head's keys and values at the ``keys`` positions (image by default) are replaced by a
    baseline (:func:`kv_baseline`), as seen by the ``queries`` rows only (text by default):
    image positions themselves still see the real image. Exact per query head, also with
    grouped-query attention. An edge already masked (a ``"mask"`` knockout, padding) stays
    masked: it composes with other interventions. Masks must be 0/1.
``"knockout"``
    the head's ``queries`` → ``keys`` edges get −inf before the softmax (per batch row and
    head, through ``hook_attn_mask``): each row renormalises over the keys it keeps, and the
    layer keeps its fused SDPA kernel. Masks must be 0/1.

Example:
    >>> masks = torch.ones(8, model.cfg.n_layers, model.cfg.n_heads); masks[:, 3, 5] = 0
    >>> hooks = head_ablation(model, repeat_layout(layout, 8), masks, mode="zero")
    >>> y = evaluate_head_masks(model, inputs, masks, mode="baseline_kv",
    ...                         baseline=kv_baseline(model, blank_inputs), metric=target_logit)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from hooked_vlm.interventions._common import (
    Hooks,
    InterventionError,
    check_mode,
    editable_attention,
)
from hooked_vlm.interventions.knockout import edge_mask, mask_additive
from hooked_vlm.interventions.prefix import PrefixCache, last_logits
from hooked_vlm.interventions.selectors import (
    Positions,
    Selector,
    check_batch,
    repeat_layout,
    resolve,
)
from hooked_vlm.layout import TokenLayout
from hooked_vlm.validation import check_finite as finite_or_raise

if TYPE_CHECKING:
    from hooked_vlm.model import HookedVLM

ABLATION_MODES = ("zero", "mean", "baseline_kv", "knockout")


@dataclass
class KVBaseline:
    """Per-layer baseline keys (after RoPE, as attention sees them) and values.

    ``keys[l]`` and ``values[l]``: ``[batch or 1, pos, n_kv_heads, d_head]``.
    """

    keys: list[Tensor]
    values: list[Tensor]


def head_ablation(
    model: HookedVLM,
    layout: TokenLayout,
    masks: Float[Tensor, "batch n_layers n_heads"],
    mode: str = "zero",
    *,
    queries: Selector = "text",
    keys: Selector = "image",
    mean: Float[Tensor, "n_layers n_heads d_head"] | None = None,
    baseline: KVBaseline | None = None,
) -> Hooks:
    """Hooks ablating, for each example ``b``, the heads where ``masks[b]`` is 0.

    Example:
        >>> hooks = head_ablation(model, layout, masks, mode="mean", mean=mean_head_outputs(
        ...     model, inputs, layout))
    """
    check_mode(mode, ABLATION_MODES, "head ablation")
    cfg = model.cfg
    masks = torch.as_tensor(masks, dtype=model.dtype, device=model.device)
    if not bool(((masks >= 0) & (masks <= 1)).all()):  # NaN fails both comparisons
        raise InterventionError(
            "head masks must hold keep-weights in [0, 1] (1 keeps a head, 0 ablates it); "
            "found values outside, or NaN/inf."
        )
    if masks.ndim != 3 or tuple(masks.shape[1:]) != (cfg.n_layers, cfg.n_heads):
        raise InterventionError(
            f"head masks must be [batch, n_layers, n_heads] = [batch, {cfg.n_layers}, "
            f"{cfg.n_heads}], got {tuple(masks.shape)}."
        )
    q_pos = resolve(layout, queries)
    check_batch(q_pos, masks.shape[0], "head masks")
    layers = [layer for layer in range(cfg.n_layers) if bool((masks[:, layer] != 1).any())]
    if mode in ("baseline_kv", "knockout"):
        if mode == "baseline_kv" and baseline is None:
            raise InterventionError("mode 'baseline_kv' needs baseline=kv_baseline(...).")
        if not bool(((masks == 0) | (masks == 1)).all()):
            raise InterventionError(f"mode {mode!r} takes 0/1 masks only.")
        k_pos = resolve(layout, keys)
        if layers:
            editable_attention(model, layers, f"head ablation mode {mode!r}")
        if mode == "knockout":
            hooks = [(f"blocks.{layer}.attn.hook_attn_mask",
                      _knockout_hook(model, masks[:, layer] == 0, q_pos, k_pos))
                     for layer in layers]
        else:
            hooks = [h for layer in layers for h in _baseline_kv_hooks(
                model, layer, masks[:, layer] == 0, q_pos, k_pos, baseline)]
        return Hooks(hooks, start=q_pos.first_reaching(k_pos))
    if mode == "mean":
        if mean is None or tuple(mean.shape) != (cfg.n_layers, cfg.n_heads, cfg.d_head):
            raise InterventionError(
                "mode 'mean' needs mean=[n_layers, n_heads, d_head] = "
                f"{(cfg.n_layers, cfg.n_heads, cfg.d_head)} (see mean_head_outputs), got "
                f"{None if mean is None else tuple(mean.shape)}."
            )
        mean = finite_or_raise(mean.to(masks), "mean head output")
    hooks = [
        (f"blocks.{layer}.attn.hook_z",
         _output_hook(model, masks[:, layer], q_pos, None if mean is None else mean[layer]))
        for layer in layers
    ]
    return Hooks(hooks, start=q_pos.first())


def _output_hook(
    model: HookedVLM, keep: Tensor, rows: Positions, ref: Tensor | None
) -> Callable[[Tensor, Any], Tensor]:
    """``z ← z + (1 − keep)·(ref − z)`` at the selected rows (``ref`` 0 when None)."""

    def hook(z: Tensor, hook: object) -> Tensor:
        start = model.state.query_start
        sel = rows.window(start, start + z.shape[1], z.device)
        weight = (1 - keep)[:, None, :] * sel[:, :, None]  # [batch, pos, head]
        target = torch.zeros_like(z) if ref is None else ref.expand_as(z)
        return z + weight[..., None] * (target - z)

    return hook


def _knockout_hook(
    model: HookedVLM, ablate: Tensor, queries: Positions, keys: Positions
) -> Callable[[Tensor, Any], Tensor]:
    """−inf on the ablated heads' ``queries`` → ``keys`` edges of the additive mask."""

    def hook(mask: Tensor, hook: object) -> Tensor:
        check_batch(queries, mask.shape[0], "head masks")
        per_head = mask.expand(-1, ablate.shape[1], -1, -1)  # the mask is shared by every head
        edges = edge_mask(per_head, queries, keys, query_start=model.state.query_start)
        return mask_additive(per_head, edges & ablate.to(mask.device)[:, :, None, None])

    return hook


def _baseline_kv_hooks(
    model: HookedVLM,
    layer: int,
    ablate: Tensor,
    queries: Positions,
    keys: Positions,
    baseline: KVBaseline,
) -> list[tuple[str, Callable[[Tensor, Any], Any]]]:
    """Scores of ablated (row, image key) edges use baseline keys; their weight goes to
    baseline values: q·k_b in ``hook_attn_scores`` (soft-capped as HF does where the model caps
    its logits), weights moved off the real values in ``hook_pattern``, Σ p·v_b added in
    ``hook_z``. Only the span of key columns between the first and the last selected key is
    touched, in place (on a copy when autograd records); an edge HF's mask blocks (a sliding
    window, a causal or block boundary) stays blocked."""
    attn = model.bridge.blocks[layer].attn.original_component
    if getattr(attn, "sinks", None) is not None:
        raise InterventionError(
            "head ablation mode 'baseline_kv' recomputes scores and does not model attention "
            "sinks; use mode 'zero' or 'mean' on this architecture."
        )
    softcap = getattr(attn, "attn_logit_softcapping", None)
    cols = keys.mask.any(0).nonzero().flatten()
    lo, hi = int(cols[0]), int(cols[-1]) + 1
    if hi > baseline.keys[layer].shape[1]:
        raise InterventionError(
            f"the baseline keys/values cover positions 0..{baseline.keys[layer].shape[1] - 1}, "
            f"but the ablated keys reach position {hi - 1}: build the baseline from inputs "
            "laid out like these (kv_baseline of the same prompt with another image)."
        )
    scaling = getattr(attn, "scaling", model.cfg.d_head**-0.5)
    group = model.cfg.n_heads // model.cfg.n_kv_heads
    base_k = einops.repeat(baseline.keys[layer][:, lo:hi], "b k g d -> b k (g r) d", r=group)
    base_v = einops.repeat(baseline.values[layer][:, lo:hi], "b k g d -> b k (g r) d", r=group)
    state: dict[str, Any] = {}
    prefix = f"blocks.{layer}.attn."

    def keep_q(q: Tensor, hook: object) -> None:
        state["q"] = q

    def scores_hook(scores: Tensor, hook: object) -> Tensor:
        check_batch(queries, scores.shape[0], "head masks")
        q = state.pop("q")
        start = model.state.query_start
        n_q, n_k = scores.shape[-2:]
        k0 = start + n_q - n_k  # the key columns' first absolute position
        a, z = max(lo, k0), min(hi, k0 + n_k)  # the ablated span inside these columns
        if a >= z:
            state["span"] = None
            return scores
        span_cols = slice(a - k0, z - k0)
        edges = edge_mask(scores, queries, keys, query_start=start)[..., span_cols]
        scores = _writable(scores)
        span = scores[..., span_cols]
        edges = edges & ablate.to(scores.device)[:, :, None, None]
        edges = edges & (span > torch.finfo(span.dtype).min / 2)  # HF's mask lets them attend
        alt_k = base_k[:, a - lo : z - lo].to(scores)
        alt = einops.einsum(q, alt_k, "b q h d, b k h d -> b h q k") * scaling
        if softcap is not None:
            alt = torch.tanh(alt / softcap) * softcap
        span.copy_(torch.where(edges, alt, span))
        state["span"] = (span_cols, a, z, edges)
        return scores

    def pattern_hook(pattern: Tensor, hook: object) -> Tensor:
        if state["span"] is None:
            return pattern
        span_cols, a, z, edges = state["span"]
        pattern = _writable(pattern)
        span = pattern[..., span_cols]
        state["moved"] = (span * edges, a, z)
        span.masked_fill_(edges, 0.0)
        return pattern

    def z_hook(z: Tensor, hook: object) -> Tensor:
        if state.pop("span") is None:
            return z
        moved, a, stop = state.pop("moved")
        alt_v = base_v[:, a - lo : stop - lo].to(z)
        return z + einops.einsum(moved, alt_v, "b h q k, b k h d -> b q h d")

    return [
        (prefix + "hook_rot_q", keep_q),
        (prefix + "hook_attn_scores", scores_hook),
        (prefix + "hook_pattern", pattern_hook),
        (prefix + "hook_z", z_hook),
    ]


def _writable(t: Tensor) -> Tensor:
    """``t`` itself for an in-place edit, or a copy when autograd may need the original."""
    return t.clone() if torch.is_grad_enabled() and t.requires_grad else t


@torch.no_grad()
def kv_baseline(model: HookedVLM, inputs: Mapping[str, Any], average: bool = True) -> KVBaseline:
    """Keys (after RoPE) and values of every layer in a run of ``inputs`` (e.g. blank images).

    ``average``: mean over the batch, a per-position dataset mean ``[1, pos, kv_head, d_head]``.

    Example:
        >>> baseline = kv_baseline(model, model.prepare(gray_images, prompts))
    """
    names = [
        f"blocks.{layer}.attn.{point}"
        for layer in range(model.cfg.n_layers) for point in ("hook_rot_k", "hook_v")
    ]
    _, cache = model.run_with_cache(inputs, names_filter=names)

    def get(layer: int, point: str) -> Tensor:
        t = cache[f"blocks.{layer}.attn.{point}"]
        return t.mean(0, keepdim=True) if average else t

    layers = range(model.cfg.n_layers)
    return KVBaseline([get(i, "hook_rot_k") for i in layers], [get(i, "hook_v") for i in layers])


@torch.no_grad()
def mean_head_outputs(
    model: HookedVLM, inputs: Mapping[str, Any], layout: TokenLayout, positions: Selector = "text"
) -> Float[Tensor, "n_layers n_heads d_head"]:
    """Mean of ``hook_z`` over the selected positions of every example, per layer and head.

    Example:
        >>> mean = mean_head_outputs(model, inputs, layout, positions="text_after_image")
    """
    sel = resolve(layout, positions).mask.to(model.device)
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(inputs, names_filter=names)
    weight = sel.to(model.dtype) / sel.sum()
    return torch.stack([
        einops.einsum(cache[name], weight, "b p h d, b p -> h d") for name in names
    ])


@torch.no_grad()
def evaluate_head_masks(
    model: HookedVLM,
    inputs: Mapping[str, Any],
    masks: Float[Tensor, "n_masks n_layers n_heads"],
    metric: Callable[[Tensor], Tensor],
    mode: str = "baseline_kv",
    *,
    batch_size: int = 8,
    reuse_prefix: bool = True,
    prefix: PrefixCache | None = None,
    **ablation: Any,
) -> Tensor:
    """``metric`` of the last-position logits of one example under each of N head masks.

    ``inputs`` hold one example; masks run ``batch_size`` at a time as a repeated batch, on
    the clean prefix's reused keys/values when the ablation leaves a prefix untouched (pass
    ``prefix``, e.g. from :func:`ablation_prefix`, to reuse one across calls).
    ``metric`` maps logits ``[batch, vocab]`` to ``[batch, ...]``; ``ablation`` goes to
    :func:`head_ablation` (``queries``, ``keys``, ``mean``, ``baseline``). A bool ``queries``
    or ``keys`` selector of shape ``[n_masks, pos]`` gives each mask its own positions.

    Example:
        >>> y = evaluate_head_masks(model, inputs, masks, lambda lg: lg[:, answer_id],
        ...                         baseline=baseline)          # [n_masks]
    """
    layout = _one_example_layout(model, inputs)
    n_masks = masks.shape[0]
    per_mask = _per_mask_selectors(ablation, n_masks)
    last = layout.select("last")[0]
    if reuse_prefix and prefix is None:
        prefix = ablation_prefix(model, inputs, masks, mode, **ablation)
    outputs = []
    for start in range(0, n_masks, batch_size):
        chunk = masks[start : start + batch_size]
        n = chunk.shape[0]
        rows = {name: sel[start : start + n] for name, sel in per_mask.items()}
        hooks = head_ablation(model, repeat_layout(layout, n), chunk, mode, **{**ablation, **rows})
        outputs.append(metric(last_logits(model, inputs, hooks, last, n,
                                          prefix if reuse_prefix else None)))
    return torch.cat(outputs)


@torch.no_grad()
def ablation_prefix(
    model: HookedVLM,
    inputs: Mapping[str, Any],
    masks: Float[Tensor, "n_masks n_layers n_heads"],
    mode: str = "baseline_kv",
    **ablation: Any,
) -> PrefixCache | None:
    """The clean prefix of one example that these head ablations leave untouched (None when
    they may change position 0 or nothing before the last position is untouched).

    Only the masks' shape and the selectors matter (every head is taken as ablated).

    Example:
        >>> prefix = ablation_prefix(model, inputs, masks[:1], baseline=baseline)
        >>> evaluate_head_masks(model, inputs, masks, metric, prefix=prefix, baseline=baseline)
    """
    layout = _one_example_layout(model, inputs)
    n = masks.shape[0] if _per_mask_selectors(ablation, masks.shape[0]) else 1
    probe = head_ablation(
        model, repeat_layout(layout, n), torch.zeros_like(masks[:n]), mode, **ablation
    )
    last = int(layout.select("last")[0][0])
    return PrefixCache.build(model, inputs, probe.start) if 0 < probe.start <= last else None


def _per_mask_selectors(ablation: Mapping[str, Any], n_masks: int) -> dict[str, Tensor]:
    """The ``queries`` / ``keys`` selectors given as one bool row per mask."""
    return {
        name: sel for name, sel in ablation.items()
        if name in ("queries", "keys") and isinstance(sel, Tensor) and sel.dtype == torch.bool
        and sel.ndim == 2 and sel.shape[0] == n_masks
    }


def _one_example_layout(model: HookedVLM, inputs: Mapping[str, Any]) -> TokenLayout:
    layout = model.layout(**inputs)
    if layout.batch_size != 1:
        raise InterventionError(
            f"evaluate_head_masks takes one example (the masks make the batch); got "
            f"{layout.batch_size}."
        )
    return layout
