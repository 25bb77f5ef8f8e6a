"""``bridge.hook_dict`` kept until a hook point or an alias changes.

TransformerLens rebuilds its bridge's ``hook_dict`` (the registry plus every alias, resolved
from the architecture's component templates) at each access: ~170 microseconds on an
embedded tiny model, read twice by each ``run_with_cache`` (plus the alias map built from it)
and once per ``hooks()`` block. On a Python-bound forward (a tiny model, a 7B model at GPU
batch 1) that is several percent of the call. Here the bridge's class gains a ``hook_dict``
that returns a copy of the last one built while the registry holds the same hook points
under the same names and no component has rebound an alias (TransformerLens counts those:
``alias_generation``). Nothing else feeds the aliases but static templates. The alias map
``run_with_cache`` derives from it is kept the same way (:func:`_kept_alias_map`).

Example:
    >>> cache_hook_dict(model.bridge)   # HookedVLM does this for you
    >>> model.bridge.hook_dict["blocks.0.hook_resid_post"]
"""

from __future__ import annotations

from typing import Any

from transformer_lens.hook_points import HookPoint
from transformer_lens.model_bridge import bridge_core
from transformer_lens.model_bridge.generalized_components.base import alias_generation

_CLASSES: dict[type, type] = {}


def _kept_alias_map(build: Any) -> Any:
    """TransformerLens' ``build_alias_to_canonical_map`` (aliases of a hook dict), returning
    the last map again while it is asked for an equal dict (same names, same hook points: one
    C-level comparison) under the same alias generation. ``run_with_cache`` builds it at every
    call: ~150 microseconds on an embedded tiny model."""
    last: list[tuple[int, dict, dict]] = []

    def aliases(hook_dict: Any, prefix: str = "") -> dict:
        if prefix or type(hook_dict) is not dict:
            return build(hook_dict, prefix)
        generation = alias_generation()
        if not (last and last[0][0] == generation and last[0][1] == hook_dict):
            last[:] = [(generation, dict(hook_dict), build(hook_dict))]
        return dict(last[0][2])

    aliases.kept_from = build  # type: ignore[attr-defined]
    return aliases


def cache_hook_dict(bridge: Any) -> None:
    """Give ``bridge`` (a TransformerLens bridge) a ``hook_dict`` rebuilt only on change."""
    if not hasattr(bridge_core.build_alias_to_canonical_map, "kept_from"):
        bridge_core.build_alias_to_canonical_map = _kept_alias_map(
            bridge_core.build_alias_to_canonical_map
        )
    cls = type(bridge)
    if cls in _CLASSES.values():
        return
    if cls not in _CLASSES:
        build = cls.hook_dict.fget

        def hook_dict(self: Any) -> dict[str, HookPoint]:
            generation, registry = alias_generation(), self._hook_registry
            kept = self.__dict__.get("_hook_dict_kept")
            # dict equality: same names, same hook point objects (compared in C)
            if kept is None or kept[0] != generation or kept[1] != registry:
                kept = (generation, dict(registry), build(self))
                self.__dict__["_hook_dict_kept"] = kept
            return dict(kept[2])  # a copy, as TransformerLens returns: callers may edit it

        _CLASSES[cls] = type(cls.__name__, (cls,), {
            "hook_dict": property(hook_dict, doc=cls.hook_dict.__doc__),
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
        })
    bridge.__class__ = _CLASSES[cls]
