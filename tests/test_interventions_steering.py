"""Steering at EOI: add/replace, equal to patching, in forward and in KV-cached generation."""

from __future__ import annotations

import pytest
import torch

from hooked_vlm import HookedVLM
from hooked_vlm.interventions import (
    InterventionError,
    class_mean_difference,
    patch,
    steer,
)
from hooked_vlm.testing.tiny import build_tiny
from tests.conftest import generate_by_recompute


@pytest.fixture(scope="module", params=["chameleon", "emu3"])
def setup(request):
    tiny = build_tiny(request.param)
    model = HookedVLM.from_hf(tiny.model)
    return model, tiny.inputs, model.layout(**tiny.inputs)


def test_adding_zero_is_a_no_op_and_replace_equals_patching(setup):
    model, inputs, layout = setup
    clean, cache = model.run_with_cache(inputs, names_filter="blocks.1.hook_resid_pre")
    zero = torch.zeros(model.cfg.d_model)
    with model.eager_attention():  # SDPA's result can depend on tensor strides by ~1e-7
        torch.testing.assert_close(
            model.run_with_hooks(inputs, fwd_hooks=steer(model, layout, zero, layers=1)),
            model(inputs), atol=0, rtol=0)
    eoi = torch.stack([p[0] for p in layout.select("eoi")])
    source = cache["blocks.1.hook_resid_pre"].flip(0)  # the other example's residuals
    vectors = source[torch.arange(2), eoi]
    steered = model.run_with_hooks(
        inputs, fwd_hooks=steer(model, layout, vectors, layers=1, mode="replace"))
    name = "blocks.1.hook_resid_pre"
    patched = model.run_with_hooks(
        inputs, fwd_hooks=patch(model, layout, {name: source}, name, "eoi"))
    torch.testing.assert_close(steered, patched, atol=1e-6, rtol=0)
    assert (steered - clean).abs().max() > 1e-4


def test_steering_in_generation_equals_full_recompute(setup):
    model, inputs, layout = setup
    vector = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    hooks = steer(model, layout, vector, layers=[0, 1], scale=3.0)
    fast = model.generate(inputs, max_new_tokens=3, fwd_hooks=hooks, eos_token_id=[])
    assert torch.equal(fast, generate_by_recompute(model, inputs, hooks, 3))


def test_class_mean_difference_and_errors(setup):
    model, _, layout = setup
    acts = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 4.0]])
    torch.testing.assert_close(
        class_mean_difference(acts, ["a", "a", "b"], "a", "b"), torch.tensor([2.0, -3.0]))
    with pytest.raises(InterventionError, match="no activation"):
        class_mean_difference(acts, ["a", "a", "b"], "a", "c")
    with pytest.raises(InterventionError, match="d_model"):
        steer(model, layout, torch.zeros(model.cfg.d_model + 1))
    with pytest.raises(InterventionError, match="accepted"):
        steer(model, layout, torch.zeros(model.cfg.d_model), mode="multiply")
