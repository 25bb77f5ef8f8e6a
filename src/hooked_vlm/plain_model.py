"""A forward with nothing hooked runs the whole HF model, no bridge in between.

:mod:`hooked_vlm.fast_layers` gives every layer and every component outside the layers a
pristine HF twin, but each still answers through its bridge: a route check per component, the
bridge's ``__call__``, and TransformerLens' ``forward`` around the HF model (argument handling,
the vision tower's wrapper). On the embedded tiny models (the Python-bound regime of a 7B
model at GPU batch 1) that was 10-20 % of a forward with no hook at all. :class:`PlainModel`
runs the HF model itself with, for the duration of the call, each bridge in its module tree
swapped for the twin already built for it (a container bridge that holds layers, such as the
vision tower, for the HF module it wraps): the same module objects everywhere else, so state
HF keeps on them between calls (Qwen2-VL's ``rope_deltas``, the hooks it installs to record
hidden states) stays one. It computes what the per-component path computes, bit for bit
(``tests/test_boundary_hooks.py``, every family). The swap is undone in a ``finally``; like
every hook in TransformerLens, it assumes one forward at a time per model.

:meth:`HookedVLM.forward` takes it where TransformerLens' forward would pass the arguments
through unchanged (:meth:`PlainModel.takes`: no request for HF's recorded outputs, no hook
on the bridge itself, no attention mask that TransformerLens turns into position ids), and
swaps out the bridges nothing could tell apart from their twins (:meth:`PlainModel.quiet_swaps`):
all of them while nothing is hooked (:meth:`PlainModel.unwatched`: no hook on any hook point
or bridge component, found in one pass over their registries in C, no TransformerLens flag
that restructures a layer, no forced eager attention, eval mode); with hooks, every
component without one, so only the hooked layers route themselves. ``run_with_cache`` keeps
TransformerLens' hooks and cache around the same call.

Example:
    >>> plain = PlainModel.build(model.bridge)      # HookedVLM does this for you
    >>> if plain.takes(kwargs):
    ...     logits = plain(ids, kwargs)              # the quiet components' bridges swapped out
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.hook_points import HookPoint
from transformer_lens.model_bridge.generalized_components import (
    CLIPVisionEncoderBridge,
    SiglipVisionEncoderBridge,
)
from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

from hooked_vlm.fast_layers import (
    any_hooks,
    bypassed,
    forced_bridge,
    global_hooks,
    tl_capture_ids,
    watched_owners,
)

# HF's recorded outputs, which TransformerLens' caching may ask for: left to the bridge.
_RECORDING = ("output_hidden_states", "output_attentions")
# Container bridges (holding layers, so without a twin of their own) whose forward only wraps
# the HF module in hook_in/hook_out: the plain model calls the HF module instead. Any other
# container keeps the bridge (PlainModel.build returns None).
_PASSTHROUGH = (
    GeneralizedComponent.forward,
    CLIPVisionEncoderBridge.forward,
    SiglipVisionEncoderBridge.forward,
)
# (a parent's _modules, the child's name, the module to run there with nothing hooked, the bridge)
Swap = tuple[dict, str, torch.nn.Module, torch.nn.Module]


class PlainModel:
    """The HF model run with its bridges swapped out, and when a forward may do so."""

    def __init__(
        self, bridge: Any, swaps: list[Swap], watched: list[dict], inert: list[dict]
    ) -> None:
        self.bridge = bridge
        self.swaps = swaps
        self.watched = watched  # __dict__ of every hook point and bridge component
        self.inert = inert  # those carrying one hook of ours that is inert with nothing hooked
        # per swap, the states it takes out of the forward (a container's own, not its
        # layers', which have swaps of their own); the states no swap takes out
        self.parts, self.rest, self.rest_inert = _partition(swaps, watched, inert)
        self.eager = [m for m in bridge.modules() if hasattr(type(m), "force_eager")]
        self.layers = bypassed(bridge)
        self.root = [bridge.__dict__]
        self.positions_owned = not bridge._accepts_derived_position_ids()

    @classmethod
    def build(cls, bridge: Any) -> PlainModel | None:
        """The plain model of ``bridge``, or ``None`` where a component has no twin (a
        forward patched on an instance, such as accelerate's dispatch hooks), a container
        bridge does more than wrap its module, or TransformerLens feeds the HF model
        something of its own (learned positions)."""
        twins: dict[int, torch.nn.Module] = {}
        for component in bypassed(bridge):
            if "_bypass_twin" not in component.__dict__:
                return None
            twins[id(component)] = component.__dict__["_bypass_twin"]
        if hasattr(bridge, "pos_embed"):
            return None  # TL sets the batch size of its position bridge in its forward
        swaps: list[Swap] = []
        if not _swaps(bridge.original_model, twins, swaps) or not swaps:
            return None
        modules = [
            bridge,
            *(m for m in bridge.modules() if isinstance(m, (HookPoint, GeneralizedComponent))),
        ]
        inert = [m.__dict__ for m in modules if m.__dict__.get("_inert_forward_hooks")]
        watched = [m.__dict__ for m in modules if not m.__dict__.get("_inert_forward_hooks")]
        return cls(bridge, swaps, watched, inert)

    def unwatched(self) -> bool:
        """True while no hook, flag or mode needs the bridge anywhere in the model."""
        return len(self.quiet_swaps()) == len(self.swaps)

    def quiet_swaps(self) -> list[Swap]:
        """The swaps of the components nothing watches: all of them while nothing is hooked;
        with hooks somewhere, those of the components without one (a watched component keeps
        its bridge, which routes itself); none while a flag, a mode, a global hook or a hook
        outside every component needs the bridge throughout. The capture hooks
        TransformerLens leaves installed after a restructuring flag is cleared do not count."""
        if forced_bridge(self.bridge, self.bridge.cfg, self.eager) or global_hooks():
            return []
        if not any_hooks(self.watched) and _only_inert(self.inert):
            return self.swaps  # the common case, decided in C
        captures = [m for m in self.layers if m.__dict__.get("_capture_hook_handles")]
        ignored = set().union(*map(tl_capture_ids, captures))

        def hooked(states: list[dict]) -> bool:
            return any_hooks(states) and (
                not ignored or bool(watched_owners(states, states, ignored))
            )

        if hooked(self.rest) or not _only_inert(self.rest_inert):
            return []
        return [swap for swap, (states, inert) in zip(self.swaps, self.parts, strict=True)
                if not hooked(states) and _only_inert(inert)]

    def takes(self, kwargs: Mapping[str, Any]) -> bool:
        """True when TransformerLens' forward would hand these HF keyword arguments to the HF
        model unchanged and nothing hooks the bridge's root, so the wrapper can be skipped."""
        for key in _RECORDING:
            if kwargs.get(key):
                return False
        if any_hooks(self.root):
            return False
        mask = kwargs.get("attention_mask")
        if mask is not None and not self.positions_owned and mask.ndim == 2:
            # TL derives position ids from a mask with a padding token before a real one
            real = mask.bool()
            if bool((real[:, 1:] & ~real[:, :-1]).any()):
                return False
        return True

    def __call__(
        self,
        input_ids: Int[Tensor, "batch pos"],
        kwargs: Mapping[str, Any],
        swaps: list[Swap] | None = None,
    ) -> Float[Tensor, "batch pos vocab"]:
        """Logits of the HF model, without TransformerLens' forward around it, with ``swaps``
        (default: :meth:`quiet_swaps`; ``[]``: every component through its bridge) applied
        for the call: only while :meth:`takes` holds.

        Example:
            >>> logits = plain(ids, kwargs)  # every bridge out while nothing is hooked
        """
        swaps = self.quiet_swaps() if swaps is None else swaps
        for modules, name, plain, _ in swaps:
            modules[name] = plain
        try:
            return self.bridge.original_model(input_ids=input_ids, **kwargs).logits
        finally:
            for modules, name, _, bridged in swaps:
                modules[name] = bridged


def _only_inert(states: list[dict]) -> bool:
    """True when each of ``states`` holds its inert forward hooks and nothing else."""
    for state in states:
        if (
            len(state["_forward_hooks"]) != state["_inert_forward_hooks"]
            or state["_forward_pre_hooks"]
            or state["_backward_hooks"]
            or state["_backward_pre_hooks"]
        ):
            return False
    return True


def _partition(
    swaps: list[Swap], watched: list[dict], inert: list[dict]
) -> tuple[list[tuple[list[dict], list[dict]]], list[dict], list[dict]]:
    """Per swap, ``(states, inert states)`` of the hook points and bridge components it takes
    out of a forward: its bridge's subtree less the subtrees of swaps nested in it (a
    container's layers), which come after it in ``swaps``. Then the watched and the inert
    states no swap takes out."""
    claimed: set[int] = set()
    inert_ids = set(map(id, inert))
    parts: list[tuple[list[dict], list[dict]]] = []
    for _, _, _, bridged in reversed(swaps):
        states = [m.__dict__ for m in bridged.modules()
                  if isinstance(m, (HookPoint, GeneralizedComponent))
                  and id(m.__dict__) not in claimed]
        claimed.update(map(id, states))
        parts.append(([d for d in states if id(d) not in inert_ids],
                      [d for d in states if id(d) in inert_ids]))
    parts.reverse()
    unclaimed = [d for d in [*watched, *inert] if id(d) not in claimed]
    return (parts, [d for d in unclaimed if id(d) not in inert_ids],
            [d for d in unclaimed if id(d) in inert_ids])


def _swaps(module: torch.nn.Module, twins: dict[int, torch.nn.Module], out: list[Swap]) -> bool:
    """Collect into ``out`` the swaps that take every bridge out of ``module``'s tree; False
    where a container bridge cannot be taken out."""
    for name, child in module._modules.items():
        if child is None:
            continue
        if id(child) in twins:
            out.append((module._modules, name, twins[id(child)], child))
        elif isinstance(child, GeneralizedComponent):
            inner = child._modules.get("_original_component")
            if inner is None or type(child).forward not in _PASSTHROUGH:
                return False
            out.append((module._modules, name, inner, child))
            if not _swaps(inner, twins, out):
                return False
        elif any(isinstance(m, GeneralizedComponent) for m in child.modules()):
            if not _swaps(child, twins, out):
                return False
    return True
