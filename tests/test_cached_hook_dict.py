"""bridge.hook_dict is kept between accesses (hooked_vlm.cached_hook_dict) and rebuilt as
soon as a hook point is added or replaced."""

from __future__ import annotations

from transformer_lens.hook_points import HookPoint

from hooked_vlm import HookedVLM
from hooked_vlm.testing.tiny import build_tiny


def test_hook_dict_is_kept_until_the_registry_changes():
    model = HookedVLM.from_hf(build_tiny("llava").model)
    bridge = model.bridge
    build = type(bridge).__mro__[1].hook_dict.fget  # TransformerLens' own, uncached
    first = bridge.hook_dict
    assert first == build(bridge)
    first.pop("blocks.0.hook_resid_post")  # a copy: the caller's edit does not stick
    assert "blocks.0.hook_resid_post" in bridge.hook_dict
    name = "blocks.0.hook_in"
    replaced, point = bridge._hook_registry[name], HookPoint()
    bridge._hook_registry[name] = point
    try:
        assert bridge.hook_dict[name] is point
        assert bridge.hook_dict == build(bridge)
    finally:
        bridge._hook_registry[name] = replaced
    assert bridge.hook_dict[name] is replaced


def test_the_alias_map_is_kept_for_an_equal_hook_dict_only():
    from transformer_lens.model_bridge import bridge_core

    model = HookedVLM.from_hf(build_tiny("llava").model)
    kept = bridge_core.build_alias_to_canonical_map
    build = kept.kept_from  # TransformerLens' own
    hooks = model.bridge.hook_dict
    first = kept(hooks)
    assert first == build(hooks) and first  # the family has aliases
    first.clear()  # a copy: the caller's edit does not stick
    assert kept(hooks) == build(hooks)
    renamed = dict(hooks)
    alias = next(iter(build(hooks)))
    renamed[alias] = HookPoint()
    renamed[alias].name = "elsewhere"
    assert kept(renamed) == build(renamed) != build(hooks)
    assert kept(hooks) == build(hooks)
    nested = {"outer": dict(hooks)}
    assert kept(nested) == build(nested)
