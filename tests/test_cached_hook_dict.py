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
