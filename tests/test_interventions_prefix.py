"""Prefix reuse: suffix runs on the clean prefix's keys/values equal the full recompute."""

from __future__ import annotations

import pytest
import torch

from hooked_vlm import HookedVLM
from hooked_vlm.interventions import (
    Hooks,
    InterventionError,
    PrefixCache,
    head_ablation,
    knockout,
    kv_baseline,
    repeat_layout,
    run_with_prefix,
)
from hooked_vlm.testing.tiny import build_tiny


@pytest.fixture(scope="module", params=["llava", "chameleon", "emu3"])
def setup(request):
    tiny = build_tiny(request.param)
    model = HookedVLM.from_hf(tiny.model)
    return model, tiny.inputs, model.layout(**tiny.inputs)


@pytest.mark.parametrize("mode", ["mask", "zero"])
@pytest.mark.parametrize("keys", ["image_and_eoi", "last_image", "random_image:5"])
def test_prefix_reuse_equals_full_recompute(setup, mode, keys):
    model, inputs, layout = setup
    hooks = knockout(model, layout, "text", keys, mode=mode)
    assert hooks.start > 0
    full = model.run_with_hooks(inputs, fwd_hooks=hooks)
    torch.testing.assert_close(run_with_prefix(model, inputs, hooks), full, atol=1e-5, rtol=0)


def test_prefix_is_reusable_repeatable_and_guarded(setup):
    model, inputs, layout = setup
    hooks = knockout(model, layout, "text", "image_and_eoi")
    prefix = PrefixCache.build(model, inputs, hooks.start)
    clean_suffix = prefix.run()
    want = prefix.clean_logits[:, hooks.start :]
    torch.testing.assert_close(clean_suffix, want, atol=1e-5, rtol=0)
    first, again = prefix.run(hooks), prefix.run(hooks)  # the cache is cropped back after a run
    torch.testing.assert_close(first, again, atol=0, rtol=0)
    masks = torch.zeros(6, model.cfg.n_layers, model.cfg.n_heads)
    masks[::2, -1] = 1
    baseline = kv_baseline(model, inputs)
    big_layout = repeat_layout(layout, 3)
    ablate = head_ablation(model, big_layout, masks, "baseline_kv", baseline=baseline)
    big = {k: v.repeat_interleave(3, 0) for k, v in inputs.items()}
    full = model.run_with_hooks(big, fwd_hooks=ablate)[:, prefix.start:]
    torch.testing.assert_close(prefix.repeated(3).run(ablate), full, atol=1e-5, rtol=0)
    early = knockout(model, layout, "all", "bos")
    with pytest.raises(InterventionError, match="inside the reused prefix"):
        prefix.run(early)
    with pytest.raises(InterventionError, match="prefix start"):
        PrefixCache.build(model, inputs, 0)


def test_a_repeated_prefix_takes_the_suffix_in_place_and_survives_a_failed_run(setup):
    model, inputs, layout = setup
    hooks = knockout(model, layout, "text", "image_and_eoi")
    big = PrefixCache.build(model, inputs, hooks.start).repeated(3)
    many = knockout(model, repeat_layout(layout, 3), "text", "image_and_eoi")
    pointers = [layer.keys.data_ptr() for layer in big.past.layers]
    first = big.run(many)
    assert [layer.keys.data_ptr() for layer in big.past.layers] == pointers  # no prefix copy
    assert {layer.get_seq_length() for layer in big.past.layers} == {big.start}

    def fail(resid, hook):
        raise RuntimeError("failed partway")

    last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_pre"
    with pytest.raises(RuntimeError, match="partway"):
        big.run(Hooks([*many, (last, fail)], start=many.start))
    torch.testing.assert_close(big.run(many), first, atol=0, rtol=0)
