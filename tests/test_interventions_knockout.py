"""Knockout: exact gate closing, causality, row sums, generation with a KV cache, errors."""

from __future__ import annotations

import contextlib

import pytest
import torch

from hooked_vlm.interventions import InterventionError, SelectorError, knockout, resolve
from tests.conftest import generate_by_recompute, same_text_two_images

NAMES = ["llava", "chameleon", "emu3"]


@pytest.fixture(scope="module", params=NAMES)
def setup(request):
    return (request.param, *same_text_two_images(request.param))


def _after_image(layout):
    return resolve(layout, "text_after_image").mask


def test_mask_knockout_makes_text_independent_of_the_image(setup):
    _, model, inputs, layout = setup
    text = _after_image(layout)[0]
    clean = model(inputs)[:, text]
    assert (clean[0] - clean[1]).abs().max() > 1e-4  # the images do matter
    hooks = knockout(model, layout, "text", "image_and_eoi", mode="mask")
    cut = model.run_with_hooks(inputs, fwd_hooks=hooks)[:, text]
    torch.testing.assert_close(cut[0], cut[1], atol=1e-5, rtol=0)


def test_keeping_eoi_or_zeroing_leaves_image_information(setup):
    name, model, inputs, layout = setup
    text = _after_image(layout)[0]
    zero = model.run_with_hooks(
        inputs, fwd_hooks=knockout(model, layout, "text", "image_and_eoi", mode="zero")
    )[:, text]
    assert (zero[0] - zero[1]).abs().max() > 1e-6  # the softmax denominator leaks
    if name != "llava":
        keep_eoi = model.run_with_hooks(
            inputs, fwd_hooks=knockout(model, layout, "text", "image", mode="mask")
        )[:, text]
        assert (keep_eoi[0] - keep_eoi[1]).abs().max() > 1e-4


@pytest.mark.parametrize("mode", ["mask", "zero"])
def test_positions_before_the_first_affected_query_are_unchanged(setup, mode):
    _, model, inputs, layout = setup
    hooks = knockout(model, layout, "all", "eoi" if layout.mask("eoi").any() else "last_image",
                     mode=mode)
    names = [f"blocks.{i}.hook_resid_post" for i in range(model.cfg.n_layers)]
    # "zero" edits the pattern, so its layers recompute attention eagerly: compare it bitwise
    # with an eager clean run ("mask" stays on SDPA, like the clean run).
    path = model.eager_attention() if mode == "zero" else contextlib.nullcontext()
    with path:
        _, clean = model.run_with_cache(inputs, names_filter=names)
        with model.hooks(hooks):
            _, cut = model.run_with_cache(inputs, names_filter=names)
    t = hooks.start
    for name in names:
        torch.testing.assert_close(cut[name][:, :t], clean[name][:, :t], atol=0, rtol=0)
    assert (cut[names[-1]][:, t:] - clean[names[-1]][:, t:]).abs().max() > 1e-6


@pytest.mark.parametrize("mode", ["mask", "zero"])
def test_row_sums(setup, mode):
    _, model, inputs, layout = setup
    name = "blocks.1.attn.hook_pattern"
    seen = {}

    def keep(key):
        def fn(pattern, hook):
            seen[key] = pattern.detach().clone()
        return fn

    hooks = knockout(model, layout, "text", "image_and_eoi", layers=[1], heads=[0, 2], mode=mode)
    model.run_with_hooks(inputs, fwd_hooks=[(name, keep("before")), *hooks, (name, keep("after"))])
    before, after = seen["before"], seen["after"]
    removed = before - after
    assert removed[:, [1, 3]].abs().max() == 0  # other heads untouched
    sums = after.sum(-1)
    if mode == "mask":
        torch.testing.assert_close(sums, torch.ones_like(sums))
    else:
        torch.testing.assert_close(sums, 1 - removed.sum(-1))
        assert removed.sum(-1).max() > 1e-3


@pytest.mark.parametrize("mode", ["mask", "zero"])
@pytest.mark.parametrize("keys", ["image_and_eoi", "random_image:3", "explicit"])
def test_generation_with_kv_cache_equals_full_recompute(setup, mode, keys):
    _, model, inputs, layout = setup
    if keys == "explicit":
        keys = [p[:2].tolist() for p in layout.select("image")]
    hooks = knockout(model, layout, "text", keys, mode=mode, seed=1)
    fast = model.generate(inputs, max_new_tokens=4, fwd_hooks=hooks, eos_token_id=[])
    slow = generate_by_recompute(model, inputs, hooks, 4)
    assert torch.equal(fast, slow)


def test_random_image_selector_is_seeded_and_per_example(setup):
    _, _, _, layout = setup
    a = resolve(layout, "random_image:4", seed=7).mask
    b = resolve(layout, "random_image:4", seed=7).mask
    assert torch.equal(a, b)
    assert a.sum(1).tolist() == [4, 4]
    assert not (a & ~layout.mask("image")).any()
    c = resolve(layout, "random_image:4", seed=8).mask
    assert not torch.equal(a, c)


def test_clear_errors(setup):
    name, model, _, layout = setup
    with pytest.raises(InterventionError, match="out of range"):
        knockout(model, layout, "text", "image", layers=[model.cfg.n_layers])
    with pytest.raises(InterventionError, match="query heads"):
        knockout(model, layout, "text", "image", heads=[model.cfg.n_heads])
    with pytest.raises(InterventionError, match="accepted"):
        knockout(model, layout, "text", "image", mode="renormalise")
    with pytest.raises(SelectorError, match="example"):
        knockout(model, layout, "text", [[5], []])
    with pytest.raises(SelectorError, match="outside"):
        knockout(model, layout, "text", [layout.seq_len])
    with pytest.raises(SelectorError, match="only"):
        resolve(layout, f"random_image:{layout.seq_len}")
    if name == "llava":
        with pytest.raises(SelectorError, match="no EOI"):
            knockout(model, layout, "text", "eoi")


def test_mask_refuses_to_empty_a_row(setup):
    _, model, inputs, layout = setup
    with pytest.raises(InterventionError, match="every key"):
        model.run_with_hooks(inputs, fwd_hooks=knockout(model, layout, "all", "all"))


def test_architecture_that_keeps_native_attention_is_refused(setup, monkeypatch):
    _, model, _, layout = setup
    import hooked_vlm.interventions._common as common

    monkeypatch.setattr(common, "PositionEmbeddingsAttentionBridge", type("Other", (), {}))
    with pytest.raises(InterventionError, match="discards such edits"):
        knockout(model, layout, "text", "image")
