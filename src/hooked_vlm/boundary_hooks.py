"""Module-boundary hook points fired from plain PyTorch hooks on the HF modules.

Most hook points a user watches are a module's input or output: the residual stream
(``hook_resid_pre|mid|post``: a layer's input and output, the second norm's input), the
sublayer outputs (``hook_attn_out``, ``hook_mlp_out``), the q/k/v/o projections (``hook_q``,
``hook_z``, ...). TransformerLens fires them from its bridge components, which costs the whole
layer its plain HF module (:mod:`hooked_vlm.fast_layers`). Here each such hook point is mapped
to the HF module of the layer's pristine twin and a PyTorch forward pre-hook or forward hook
on that module fires the *same* TransformerLens ``HookPoint`` object: hook names,
``ActivationCache``, edit semantics (a hook's return value replaces the activation), backward
hooks and ``reset_hooks`` are TransformerLens' own, only the caller changes.

Which hook points qualify is decided per bridge class, by the forward it runs: only classes
whose forward is "hook_in, call the HF module, hook_out" (TL's generic component, blocks,
linear and MLP bridges, our SDPA attention's native path) and the input of a norm (TL
recomputes the norm itself, so its outputs do not qualify). Anything else watched in a layer
(patterns, scores, rotated q/k, norm internals, ...) sends the layer down the bridged path.

The PyTorch hooks live only for the call of the twin (registered on entry, removed in a
``finally``), so the bridged path and the user's own hooks on the HF modules never see them.

Example:
    >>> entries, index = boundaries(layer, twins)   # fast_layers does this once per layer
    >>> with attached([entries[i] for i in watched]):
    ...     out = twin(hidden)                       # fires the watched HookPoints
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from transformer_lens.hook_points import HookPoint
from transformer_lens.model_bridge.generalized_components import (
    BlockBridge,
    GatedMLPBridge,
    LinearBridge,
    MLPBridge,
    NormalizationBridge,
    RMSNormalizationBridge,
)
from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

from hooked_vlm.fast_attention import FastPathAttention

# The input names TL's generic component looks for, in its order (then the first argument).
_INPUT_NAMES = ("input", "hidden_states", "input_ids", "query_input", "x", "inputs_embeds")


@dataclass(frozen=True)
class Boundary:
    """Hook points fired at one HF module of a twin: on its input (``pre``, in order) and on
    its output (``post``)."""

    module: torch.nn.Module
    pre: tuple[HookPoint, ...]
    post: tuple[HookPoint, ...]

    def points(self) -> tuple[HookPoint, ...]:
        return self.pre + self.post


def _in_projection(component: GeneralizedComponent) -> GeneralizedComponent | None:
    """The ``in`` projection whose ``hook_in`` TL's MLPBridge fires with its own."""
    found = component._modules.get("in") or component._modules.get("input")
    return found if isinstance(found, LinearBridge) else None


def _hook_points(component: GeneralizedComponent, skip_pre: set[int]) -> tuple[tuple, tuple]:
    """``(pre, post)`` hook points of ``component`` fired where its HF module is called, or
    two empty tuples when its forward does more than call the HF module (see module doc)."""
    forward = type(component).forward
    hook_in, hook_out = component.hook_in, component.hook_out
    pre = () if id(component) in skip_pre else (hook_in,)
    if forward is MLPBridge.forward:  # TL fires the `in` projection's hook_in with its own
        extra = _in_projection(component)
        return (hook_in, *((extra.hook_in,) if extra is not None else ())), (hook_out,)
    if forward is GatedMLPBridge.forward:
        if getattr(component, "_use_processed_weights", False):
            return (), ()
        return pre, (hook_out,)
    if forward in (GeneralizedComponent.forward, BlockBridge.forward, LinearBridge.forward):
        return pre, (hook_out,)
    if forward is FastPathAttention.forward:  # its native path: hook_in, HF (SDPA), hook_out
        return pre, (hook_out,)
    if forward in (NormalizationBridge.forward, RMSNormalizationBridge.forward):
        return pre, ()  # the output is TL's own recomputation of the norm
    return (), ()


def boundaries(
    layer: GeneralizedComponent, twins: dict[int, torch.nn.Module]
) -> tuple[list[Boundary], dict[int, int]]:
    """The boundary hook points of ``layer`` on its twin's modules.

    ``twins`` maps ``id(bridge)`` to the twin module standing for it (from
    :func:`hooked_vlm.fast_layers.pristine`). Returns the entries and a map from
    ``id(hook point)`` to the index of the entry that fires it.
    """
    components = [m for m in layer.modules() if isinstance(m, GeneralizedComponent)]
    skip_pre = {
        id(extra)
        for c in components
        if type(c).forward is MLPBridge.forward and (extra := _in_projection(c)) is not None
    }
    entries: list[Boundary] = []
    index: dict[int, int] = {}
    for component in components:
        twin = twins.get(id(component))
        pre, post = _hook_points(component, skip_pre)
        if twin is None or not (pre or post):
            continue
        for point in pre + post:
            index[id(point)] = len(entries)
        entries.append(Boundary(twin, pre, post))
    return entries, index


def _fire(points: Sequence[HookPoint], value: Any) -> Any:
    for point in points:
        value = point(value)
    return value


def _pre_hook(points: tuple[HookPoint, ...]) -> Callable[..., Any]:
    def hook(_module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        for name in _INPUT_NAMES:  # TL's generic component: a named input first
            if name in kwargs:
                kwargs[name] = _fire(points, kwargs[name])
                return args, kwargs
        if args and isinstance(args[0], torch.Tensor):
            return (_fire(points, args[0]), *args[1:]), kwargs
        return args, kwargs

    return hook


def _post_hook(points: tuple[HookPoint, ...]) -> Callable[..., Any]:
    def hook(_module: torch.nn.Module, _args: tuple, output: Any) -> Any:
        if isinstance(output, tuple):
            return (_fire(points, output[0]), *output[1:]) if output else output
        hidden = getattr(output, "last_hidden_state", None)
        if not isinstance(output, torch.Tensor) and isinstance(hidden, torch.Tensor):
            output.last_hidden_state = _fire(points, hidden)
            return output
        return _fire(points, output)

    return hook


@contextmanager
def attached(entries: Sequence[Boundary]) -> Iterator[None]:
    """PyTorch hooks firing ``entries``' hook points for the duration of a ``with`` block.

    Pre-hooks go first (the bridge fires ``hook_in`` before the module's own pre-hooks run),
    forward hooks last (it fires ``hook_out`` on what the module, hooks included, returned).
    """
    handles = []
    try:
        for entry in entries:
            if entry.pre:
                handles.append(entry.module.register_forward_pre_hook(
                    _pre_hook(entry.pre), prepend=True, with_kwargs=True
                ))
            if entry.post:
                handles.append(entry.module.register_forward_hook(_post_hook(entry.post)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def run_with_boundaries(
    twin: torch.nn.Module, entries: Sequence[Boundary], args: tuple, kwargs: dict
) -> Any:
    """Call ``twin`` firing ``entries``' hook points. The twin's own entry (a layer's
    ``hook_resid_pre``/``post``) fires around the call itself, as the bridge does, with no
    PyTorch hook to register; the inner modules' entries through :func:`attached`."""
    own = [entry for entry in entries if entry.module is twin]
    inner = [entry for entry in entries if entry.module is not twin]
    if own:
        args, kwargs = _pre_hook(own[0].pre)(twin, args, kwargs)
    if inner:
        with attached(inner):
            out = twin(*args, **kwargs)
    else:
        out = twin(*args, **kwargs)
    return _post_hook(own[0].post)(twin, args, out) if own else out
