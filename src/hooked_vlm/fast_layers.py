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
import operator
import types
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import compress
from typing import Any

import torch
from transformer_lens.hook_points import HookPoint
from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

from hooked_vlm.boundary_hooks import boundaries, run_with_boundaries
from hooked_vlm.fast_attention import sdpa_supported

_RESTRUCTURING_FLAGS = ("use_attn_result", "use_split_qkv_input", "use_attn_in", "use_hook_mlp_in")


def pristine(
    module: torch.nn.Module, twins: dict[int, torch.nn.Module] | None = None
) -> torch.nn.Module:
    """A copy of the HF module tree under ``module`` with every bridge replaced by the HF
    module it wraps. Parameters, buffers, attributes and PyTorch hook registries are shared,
    not copied: a hook registered on an HF module (by the user, or HF's own output capturing
    for ``output_hidden_states``) runs on either path. ``twins``, when given, receives
    ``id(bridge or module) -> its twin`` for every module of the tree."""
    twins = {} if twins is None else twins
    given = module
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
        {name: None if c is None else pristine(c, twins) for name, c in module._modules.items()},
    )
    twins[id(given)] = twin
    return twin


_HOOK_REGISTRIES = (
    "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
)
_GET_REGISTRY = tuple(operator.itemgetter(name) for name in _HOOK_REGISTRIES)


def any_hooks(states: list[dict[str, Any]]) -> bool:
    """True when one of the modules whose ``__dict__`` is in ``states`` holds a PyTorch hook.

    ``map`` over ``operator.itemgetter`` keeps the loop in C: this runs for every component
    of every forward (a few microseconds for the ~350 hook points and bridges of a tiny
    model, where a Python loop took ~20). The registries are looked up at every call, since
    TransformerLens replaces (not empties) them on removal.

    Example:
        >>> any_hooks([point.__dict__ for point in model.bridge.blocks[0].modules()])
        False
    """
    for get in _GET_REGISTRY:
        if any(map(get, states)):
            return True
    return False


def watched_owners(owners: list[Any], states: list[dict], ignored: set[int]) -> list[Any]:
    """The entries of ``owners`` whose module (``__dict__`` at the same index of ``states``)
    holds a hook other than those whose handle ids are in ``ignored``: TL's own capture
    hooks (for ``use_hook_mlp_in`` and the split-qkv fork, both restructuring flags), which
    it leaves installed after the flag is cleared. ``itertools.compress`` keeps the scan in
    C; only the few hooked owners reach Python."""
    hooked: set[int] = set()
    for get in _GET_REGISTRY:
        if any(map(get, states)):  # most registries are empty everywhere: one C pass each
            hooked.update(compress(range(len(states)), map(get, states)))
    return [
        owners[i]
        for i in sorted(hooked)
        if not ignored
        or not all(key in ignored for name in _HOOK_REGISTRIES for key in states[i][name])
    ]


def _route(
    owners: list[tuple[dict, int]],
    states: list[dict],
    ignored: set[int],
    boundary: bool,
) -> tuple[int, ...] | None:
    """How a layer with hooks somewhere in it runs: ``None`` when it needs the bridge (a hook
    on a hook point that is not a module boundary), else the indices of the boundary entries
    whose hook points have hooks (empty: the plain twin, nothing watched).

    ``owners`` are ``(__dict__, boundary entry or -1)`` of the modules whose hooks count,
    ``states`` their ``__dict__`` alone; ``ignored`` as in :func:`watched_owners`.
    ``boundary=False`` sends every watched layer to the bridge (:func:`bridged_hook_points`).
    """
    watched: set[int] = set()
    for _, entry in watched_owners(owners, states, ignored):
        if entry < 0 or not boundary:
            return None
        watched.add(entry)
    return tuple(sorted(watched))


def forced_bridge(module: torch.nn.Module, config: Any, eager: list[Any]) -> bool:
    """True when ``module`` (a layer, or the whole bridge) must run TransformerLens' own code
    whatever is hooked: training (twins are not registered, so ``train()`` does not reach
    them), compatibility mode (TL's processed weights live on the bridges), a forced eager
    attention among ``eager``, or a TL flag in ``config`` that restructures a layer."""
    if module.training or getattr(module, "compatibility_mode", False):
        return True
    for attention in eager:
        if attention.force_eager:
            return True
    for flag in _RESTRUCTURING_FLAGS:  # a plain loop: this runs for every component call
        if getattr(config, flag, False):
            return True
    return False


def tl_capture_ids(layer: GeneralizedComponent) -> set[int]:
    """Handle ids of the capture hooks TransformerLens left installed on ``layer``."""
    return {handle.id for handle in layer.__dict__.get("_capture_hook_handles", ())}


def _layers(bridge: Any) -> Iterator[GeneralizedComponent]:
    """Decoder blocks and vision-tower layers of a bridge."""
    yield from getattr(bridge, "blocks", [])
    vision = getattr(bridge, "vision_encoder", None)
    for attr in ("encoder_layers", "blocks"):
        yield from getattr(vision, attr, None) or []


def _outside(bridge: Any) -> Iterator[GeneralizedComponent]:
    """The bridge components outside the layers that hold no layer: embedding, rotary
    embedding, final norm, unembedding, the projector, a vision tower's patch embedding and
    norms. Each costs the bridge's Python per call like a layer does, so each gets a twin."""
    layers = {id(layer) for layer in _layers(bridge)}

    def walk(module: torch.nn.Module) -> Iterator[GeneralizedComponent]:
        for child in module.children():
            if id(child) in layers:
                continue
            if (
                isinstance(child, GeneralizedComponent)
                and child._modules.get("_original_component") is not None
                and not any(id(m) in layers for m in child.modules())
            ):
                yield child
            else:
                yield from walk(child)

    yield from walk(bridge)


def bypassed(bridge: Any) -> list[GeneralizedComponent]:
    """Every component that gets a twin: the layers, then what lies outside them."""
    return [*_layers(bridge), *_outside(bridge)]


def install_layer_bypass(bridge: Any) -> int:
    """Give every layer of ``bridge`` a pristine twin used while nothing watches the layer,
    and every component outside the layers (embedding, final norm, unembedding, ...) too.

    Returns the number of components given a twin. Layers holding a module whose ``forward`` was
    replaced on the instance (accelerate's ``device_map`` dispatch hooks, for one) keep the
    bridged path only: a shallow twin would call the patched original.
    """
    count = 0
    for layer in bypassed(bridge):
        if layer._modules.get("_original_component") is None or "_bypass_twin" in layer.__dict__:
            continue
        modules = list(layer.modules())  # bridges, hook points, the HF modules they wrap
        if any("forward" in m.__dict__ for m in modules[1:]):
            continue  # a forward patched on an instance (accelerate's dispatch hooks): keep it
        twins: dict[int, torch.nn.Module] = {}
        twin = pristine(layer, twins)
        entries, entry_of = boundaries(layer, twins)
        # TL-level hooks (hook points, inner bridges) fire only on the bridged path, except
        # module-boundary hook points, fired from PyTorch hooks on the twin; the layer's own
        # hooks run around either path, HF modules' hooks are shared with the twin.
        owners = [
            (m.__dict__, entry_of.get(id(m), -1))
            for m in modules[1:]
            if isinstance(m, (HookPoint, GeneralizedComponent))
        ]
        states = [d for d, _ in owners]
        eager_modules = [m for m in modules if hasattr(type(m), "force_eager")]
        bridged_forward = layer.forward

        def route(
            self: GeneralizedComponent,
            _owners: list[tuple[dict, int]] = owners,
            _states: list[dict] = states,
            _eager: list[Any] = eager_modules,
        ) -> tuple[int, ...] | None:
            """``None``: run the bridge; else the boundary entries to fire on the twin."""
            state = self.__dict__
            if (
                state.get("_stop_at_layer_idx") is not None  # TL's start/stop_at_layer
                or state.get("_start_at_layer_idx") is not None
                or forced_bridge(self, self.config, _eager)
            ):
                return None
            if not any_hooks(_states):
                return ()  # the common case, decided in C
            boundary = not state.get("_boundary_off", False)
            return _route(_owners, _states, tl_capture_ids(self), boundary)

        def forward(
            self: GeneralizedComponent, *args: Any, _bridged: Any = bridged_forward, **kwargs: Any
        ) -> Any:
            path = self.__dict__["_bypass_route"]()
            if path is None:
                return _bridged(*args, **kwargs)
            return _run_twin(self, path, args, kwargs)

        object.__setattr__(layer, "_bypass_twin", twin)  # not a submodule: no double params
        object.__setattr__(layer, "_boundary_points", frozenset(entry_of))
        object.__setattr__(layer, "_bypass_entries", entries)
        object.__setattr__(layer, "_bypass_route", types.MethodType(route, layer))
        # object.__setattr__: a bridge forwards attribute writes to the module it wraps
        object.__setattr__(layer, "forward", types.MethodType(forward, layer))
        layer.__class__ = _direct_call_class(type(layer))
        count += 1
    return count


def _run_twin(layer: GeneralizedComponent, path: tuple[int, ...], args: tuple, kwargs: dict) -> Any:
    state = layer.__dict__
    if not path:
        return state["_bypass_twin"](*args, **kwargs)
    entries = state["_bypass_entries"]
    return run_with_boundaries(state["_bypass_twin"], [entries[i] for i in path], args, kwargs)


_DIRECT_CALL_CLASSES: dict[type, type] = {}


def _direct_call_class(cls: type) -> type:
    """``cls`` with a ``__call__`` that goes straight to the twin when no PyTorch hook sits on
    the component itself (nor a global one): TransformerLens' ``__call__`` (accelerate
    alignment, a no-op for the components given twins) and ``nn.Module``'s hook dispatch cost
    tens of microseconds per component per call. Anything else takes the usual call."""
    if cls in _DIRECT_CALL_CLASSES.values():
        return cls
    if cls not in _DIRECT_CALL_CLASSES:

        def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
            state = self.__dict__
            if not (
                state["_forward_hooks"] or state["_forward_pre_hooks"]
                or state["_backward_hooks"] or state["_backward_pre_hooks"]
                or global_hooks()
            ):
                path = state["_bypass_route"]()
                if path is not None:
                    return _run_twin(self, path, args, kwargs)
            return cls.__call__(self, *args, **kwargs)

        _DIRECT_CALL_CLASSES[cls] = type(cls.__name__, (cls,), {
            "__call__": __call__, "__module__": cls.__module__, "__qualname__": cls.__qualname__,
        })
    return _DIRECT_CALL_CLASSES[cls]


def global_hooks() -> bool:
    """True when a global PyTorch module hook is registered (it must see every module)."""
    module = torch.nn.modules.module
    return bool(
        module._global_forward_hooks or module._global_forward_pre_hooks
        or module._global_backward_hooks or module._global_backward_pre_hooks
    )


def boundary_hook_names(bridge: Any) -> set[str]:
    """Hook names (aliases included) fired from PyTorch hooks on a layer's plain HF modules:
    watching only these keeps the layer off the bridge (:mod:`hooked_vlm.boundary_hooks`).

    Example:
        >>> "blocks.0.hook_resid_post" in boundary_hook_names(model.bridge)
        True
    """
    points: set[int] = set()
    for layer in bypassed(bridge):
        points |= layer.__dict__.get("_boundary_points", frozenset())
    return {name for name, point in bridge.hook_dict.items() if id(point) in points}


@contextmanager
def bridged_hook_points(bridge: Any) -> Iterator[None]:
    """Run every watched layer through the bridge, module-boundary hook points included (the
    path before :mod:`hooked_vlm.boundary_hooks`): for comparisons and benchmarks.

    Example:
        >>> with bridged_hook_points(model.bridge):
        ...     _, bridged = model.run_with_cache(inputs, names_filter="blocks.0.hook_resid_post")
    """
    layers = [layer for layer in bypassed(bridge) if "_bypass_twin" in layer.__dict__]
    for layer in layers:
        layer.__dict__["_boundary_off"] = True
    try:
        yield
    finally:
        for layer in layers:
            layer.__dict__.pop("_boundary_off", None)
