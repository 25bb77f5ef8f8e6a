"""Unwatched layers run as plain HF modules.

TransformerLens' bridge wraps every submodule of a layer (norms, projections, attention, MLP)
in a component that fires hook points, and costs about half a millisecond of Python per layer
whether or not anything is hooked: on a GPU at batch 1 that time is not hidden behind the
kernels. For each decoder block and vision-tower layer, :func:`install_layer_bypass` keeps a
*pristine twin*: the same HF layer with its original submodules, sharing every parameter,
buffer and PyTorch hook registry (no copy of the weights). A layer runs its twin while nothing
watches it, and the bridged layer (every hook point firing, edits applied) as soon as a hook
sits on one of its hook points or inner bridge components, a TransformerLens flag restructures
it (``use_attn_result``, ...), or ``HookedVLM.eager_attention()`` is on. PyTorch hooks on the
HF modules themselves run on both paths.

Both paths run HF's own code on the same tensors (attention through SDPA in both; see
:mod:`hooked_vlm.fast_attention`), so a clean run and a run hooked at one layer differ only in
which Python objects compute it.

Example:
    >>> install_layer_bypass(model.bridge)                    # HookedVLM does this for you
    >>> model(inputs)                                           # every layer: plain HF
    >>> model.run_with_cache(inputs, names_filter="blocks.3.hook_resid_post")  # layer 3 bridged
"""

from __future__ import annotations

import copy
import types
from collections.abc import Iterator
from typing import Any

import torch
from transformer_lens.hook_points import HookPoint
from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

from hooked_vlm.fast_attention import sdpa_supported

_RESTRUCTURING_FLAGS = ("use_attn_result", "use_split_qkv_input", "use_attn_in", "use_hook_mlp_in")


def pristine(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of the HF module tree under ``module`` with every bridge replaced by the HF
    module it wraps. Parameters, buffers, attributes and PyTorch hook registries are shared,
    not copied: a hook registered on an HF module (by the user, or HF's own output capturing
    for ``output_hidden_states``) runs on either path."""
    if isinstance(module, GeneralizedComponent):
        module = module.original_component
    twin = copy.copy(module)
    config = getattr(module, "config", None)
    if getattr(config, "_attn_implementation", None) == "eager" and sdpa_supported(config):
        # The bridged path recomputes attention itself; the twin runs HF's code, with SDPA.
        config = copy.copy(config)
        config._attn_implementation = "sdpa"
        object.__setattr__(twin, "config", config)
    object.__setattr__(
        twin,
        "_modules",
        {name: None if c is None else pristine(c) for name, c in module._modules.items()},
    )
    return twin


_HOOK_REGISTRIES = (
    "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
)


def _watched(
    owners: list[dict], ignored: set[int], eager_modules: list[Any], config: Any
) -> bool:
    """True when a hook, a restructuring TL flag or a forced eager attention needs the bridge.

    ``owners`` are the ``__dict__`` of the modules whose hooks count: their hook registries are
    looked up at every call, since TransformerLens replaces (not empties) them on removal.
    ``ignored``: ids of TL's own capture hooks (for ``use_hook_mlp_in`` and the split-qkv
    fork, both restructuring flags checked here), which it leaves installed for good.
    """
    if any(m.force_eager for m in eager_modules):
        return True
    if any(bool(getattr(config, flag, False)) for flag in _RESTRUCTURING_FLAGS):
        return True
    for d in owners:  # a plain loop: this runs for every layer of every forward
        for name in _HOOK_REGISTRIES:
            registry = d.get(name)
            if registry and (not ignored or any(key not in ignored for key in registry)):
                return True
    return False


def _tl_capture_ids(layer: GeneralizedComponent) -> set[int]:
    return {handle.id for handle in layer.__dict__.get("_capture_hook_handles", ())}


def _layers(bridge: Any) -> Iterator[GeneralizedComponent]:
    """Decoder blocks and vision-tower layers of a bridge."""
    yield from getattr(bridge, "blocks", [])
    vision = getattr(bridge, "vision_encoder", None)
    for attr in ("encoder_layers", "blocks"):
        yield from getattr(vision, attr, None) or []


def install_layer_bypass(bridge: Any) -> int:
    """Give every layer of ``bridge`` a pristine twin used while nothing watches the layer.

    Returns the number of layers given a twin. Layers holding a module whose ``forward`` was
    replaced on the instance (accelerate's ``device_map`` dispatch hooks, for one) keep the
    bridged path only: a shallow twin would call the patched original.
    """
    count = 0
    for layer in _layers(bridge):
        if layer.original_component is None or "_bypass_twin" in layer.__dict__:
            continue
        modules = list(layer.modules())  # bridges, hook points, the HF modules they wrap
        if any("forward" in m.__dict__ for m in modules[1:]):
            continue  # a forward patched on an instance (accelerate's dispatch hooks): keep it
        # TL-level hooks (hook points, inner bridges) fire only on the bridged path; the layer's
        # own hooks run around either path, HF modules' hooks are shared with the twin.
        owners = [
            m.__dict__ for m in modules[1:] if isinstance(m, (HookPoint, GeneralizedComponent))
        ]
        eager_modules = [m for m in modules if hasattr(type(m), "force_eager")]
        twin = pristine(layer)
        bridged_forward = layer.forward

        def forward(
            self: GeneralizedComponent,
            *args: Any,
            _twin: torch.nn.Module = twin,
            _bridged: Any = bridged_forward,
            _owners: list[dict] = owners,
            _eager: list[Any] = eager_modules,
            **kwargs: Any,
        ) -> Any:
            state = self.__dict__
            if (
                self.training  # the twin is not registered, so train() does not reach it
                or state.get("_stop_at_layer_idx") is not None  # TL's start/stop_at_layer
                or state.get("_start_at_layer_idx") is not None
                or self.compatibility_mode  # TL's processed weights live on the bridges
                or _watched(_owners, _tl_capture_ids(self), _eager, self.config)
            ):
                return _bridged(*args, **kwargs)
            return _twin(*args, **kwargs)

        object.__setattr__(layer, "_bypass_twin", twin)  # not a submodule: no double params
        # object.__setattr__: a bridge forwards attribute writes to the module it wraps
        object.__setattr__(layer, "forward", types.MethodType(forward, layer))
        count += 1
    return count
