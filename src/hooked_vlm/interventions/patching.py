"""Activation patching: copy any hook's activations at chosen positions from a source run.

Source and target share positions (same prompt, different image: the Narrow Gate setting).
:func:`patch` gives hooks for one forward; :func:`patch_sweep` runs one patch per layer (or
the cumulative range ``l..L-1``), several layers per forward as a repeated batch, on the
target's reused clean prefix, and returns a metric per layer and example.

Example:
    >>> _, src = model.run_with_cache(source, names_filter="blocks.4.hook_resid_pre")
    >>> logits = model.run_with_hooks(target, fwd_hooks=patch(
    ...     model, layout, src, "blocks.4.hook_resid_pre", positions="eoi"))
    >>> ld = patch_sweep(model, target, source, "blocks.{layer}.hook_resid_pre", "eoi",
    ...                  metric=lambda lg: logit_difference(lg, cls_b, cls_a))  # [L, batch]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import einops
import torch
from jaxtyping import Bool
from torch import Tensor

from hooked_vlm.interventions._common import Hooks, InterventionError, check_layers
from hooked_vlm.interventions.prefix import PrefixCache, last_logits
from hooked_vlm.interventions.selectors import Positions, Selector, check_batch, resolve
from hooked_vlm.layout import TokenLayout
from hooked_vlm.validation import check_finite as finite_or_raise

if TYPE_CHECKING:
    from hooked_vlm.model import HookedVLM

_NOT_POSITIONAL = ("hook_pattern", "hook_attn_scores", "hook_cos", "hook_sin")


def patch(
    model: HookedVLM,
    layout: TokenLayout,
    source: Mapping[str, Tensor],
    names: str | Sequence[str],
    positions: Selector = "eoi",
    check_finite: bool = True,
) -> Hooks:
    """Hooks writing ``source[name]`` (e.g. an ``ActivationCache``) into the run at ``positions``.

    ``source[name]`` is ``[batch or 1, pos, ...]`` over the same positions as the target; a
    source holding NaN/inf raises unless ``check_finite=False``.

    Example:
        >>> hooks = patch(model, layout, cache, [f"blocks.{l}.attn.hook_in" for l in range(4, 8)])
    """
    names = [_checked(name) for name in ([names] if isinstance(names, str) else names)]
    pos = resolve(layout, positions)
    if check_finite:
        for name in names:
            finite_or_raise(source[name], f"patch source {name}")
    return Hooks(
        [(name, _patch_hook(model, source[name], pos, None)) for name in names],
        start=pos.first(),
    )


def _checked(name: str) -> str:
    if name.endswith(_NOT_POSITIONAL):
        raise InterventionError(
            f"cannot patch {name!r} by position: its second axis is not the position. Patch "
            "hook_z / hook_v / hook_rot_k (per head) or the residual stream instead."
        )
    return name


def _patch_hook(
    model: HookedVLM, source: Tensor, pos: Positions, rows: Bool[Tensor, " batch"] | None
) -> Callable[[Tensor, Any], Tensor]:
    def hook(act: Tensor, hook: object) -> Tensor:
        check_batch(pos, act.shape[0], "patch")
        start = model.state.query_start
        stop = start + act.shape[1]
        sel = pos.window(start, stop, act.device)
        if rows is not None:
            sel = sel & rows.to(act.device)[:, None]
        if stop > source.shape[1]:
            if bool(sel[:, source.shape[1] - start :].any()):
                raise InterventionError(
                    f"patch selects positions past the source run ({source.shape[1]} "
                    "positions), e.g. generated tokens; select prompt positions only."
                )
            sel = sel[:, : source.shape[1] - start]
        n = sel.shape[1]
        src = source[:, start : start + n].to(act)
        sel = sel.reshape(*sel.shape, *([1] * (act.ndim - 2)))
        out = act.clone()
        out[:, :n] = torch.where(sel, src, act[:, :n])
        return out

    return hook


@torch.no_grad()
def patch_sweep(
    model: HookedVLM,
    target: Mapping[str, Any],
    source: Mapping[str, Any],
    hook: str = "blocks.{layer}.hook_resid_pre",
    positions: Selector = "eoi",
    *,
    layers: int | Sequence[int] | None = None,
    cumulative: bool = False,
    metric: Callable[[Tensor], Tensor] | None = None,
    layers_per_forward: int = 4,
    reuse_prefix: bool = True,
) -> Tensor:
    """``metric`` of the last-position logits, patching ``hook`` layer by layer.

    ``hook`` is a name template with ``{layer}``. ``cumulative``: patch layers ``l..L-1``
    together (e.g. the attention input, ``"blocks.{layer}.attn.hook_in"``). ``metric`` maps
    logits ``[batch, vocab]`` to ``[batch, ...]`` (default: the logits themselves). Returns
    ``[n_layers_swept, batch, ...]``.

    Example:
        >>> sims = patch_sweep(model, target, source, metric=lambda lg: overlap(lg, src_last))
    """
    if "{layer}" not in hook:
        raise InterventionError(
            f"patch_sweep needs a hook template with '{{layer}}' (e.g. "
            f"'blocks.{{layer}}.hook_resid_pre'), got {hook!r}: without it every row would "
            "patch the same hook point. Use patch() for one hook."
        )
    sweep = check_layers(model, layers)
    needed = range(min(sweep), model.cfg.n_layers) if cumulative else sweep
    names = {layer: _checked(hook.format(layer=layer)) for layer in needed}
    _, cache = model.run_with_cache(source, names_filter=list(names.values()))
    for name in names.values():
        finite_or_raise(cache[name], f"source activation {name}")
    layout = model.layout(**target)
    pos = resolve(layout, positions)
    last = torch.stack([p[-1] for p in layout.select("last")])
    start = pos.first()
    prefix = PrefixCache.build(model, target, start) if reuse_prefix and start > 0 else None
    batch, out = layout.batch_size, []
    step = layers_per_forward
    for chunk in [sweep[i : i + step] for i in range(0, len(sweep), step)]:
        n = len(chunk)
        hooks = []
        for layer, name in names.items():
            active = [layer == first or (cumulative and layer >= first) for first in chunk]
            if not any(active):
                continue
            rows = torch.tensor(active).repeat(batch)
            src = cache[name].repeat_interleave(n, 0)
            hooks.append((name, _patch_hook(model, src, pos.repeat_interleave(n), rows)))
        logits = last_logits(model, target, hooks, last, n, prefix)
        value = logits if metric is None else metric(logits)
        out.append(einops.rearrange(value, "(b n) ... -> n b ...", n=n))
    return torch.cat(out)

