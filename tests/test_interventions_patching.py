"""Patching, sweeps and metrics: self-patch no-op, full patch = source, sweep = manual patch."""

from __future__ import annotations

import pytest
import torch

from hooked_vlm.interventions import (
    InterventionError,
    distribution_overlap,
    flip_rate,
    logit_difference,
    patch,
    patch_sweep,
)
from tests.conftest import same_text_two_images


@pytest.fixture(scope="module", params=["llava", "chameleon", "emu3"])
def setup(request):
    model, inputs, layout = same_text_two_images(request.param, n_layers=3)
    source = {k: v.flip(0) for k, v in inputs.items()}  # the other image
    spot = "eoi" if request.param != "llava" else "last_image"
    return model, inputs, source, layout, spot


def _names(model, template):
    return [template.format(layer=i) for i in range(model.cfg.n_layers)]


def test_patching_a_run_with_its_own_activations_is_a_no_op(setup):
    model, inputs, _, layout, _ = setup
    names = _names(model, "blocks.{layer}.hook_resid_pre")
    names += _names(model, "blocks.{layer}.attn.hook_z")
    clean, cache = model.run_with_cache(inputs, names_filter=names)
    got = model.run_with_hooks(inputs, fwd_hooks=patch(model, layout, cache, names, "all"))
    torch.testing.assert_close(got, clean, atol=0, rtol=0)


@pytest.mark.parametrize("name", ["blocks.0.hook_resid_pre", "blocks.2.hook_resid_post"])
def test_patching_everything_reproduces_the_source(setup, name):
    model, inputs, source, layout, _ = setup
    want, cache = model.run_with_cache(source, names_filter=name)
    got = model.run_with_hooks(inputs, fwd_hooks=patch(model, layout, cache, name, "all"))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cumulative", [False, True])
def test_sweep_equals_manual_patches_with_and_without_prefix_and_batching(setup, cumulative):
    model, inputs, source, layout, spot = setup
    template = "blocks.{layer}.attn.hook_in" if cumulative else "blocks.{layer}.hook_resid_pre"
    kw = dict(hook=template, positions=spot, cumulative=cumulative)
    fast = patch_sweep(model, inputs, source, layers_per_forward=2, **kw)
    slow = patch_sweep(model, inputs, source, layers_per_forward=1, reuse_prefix=False, **kw)
    assert fast.shape == (model.cfg.n_layers, 2, model.cfg.d_vocab)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)
    names = _names(model, template)
    _, cache = model.run_with_cache(source, names_filter=names)
    last = layout.seq_len - 1
    for layer in range(model.cfg.n_layers):
        chosen = names[layer:] if cumulative else names[layer]
        manual = model.run_with_hooks(inputs, fwd_hooks=patch(model, layout, cache, chosen, spot))
        torch.testing.assert_close(fast[layer], manual[:, last], atol=1e-5, rtol=0)


def test_sweep_metric_and_layers(setup):
    model, inputs, source, _, spot = setup
    ld = patch_sweep(model, inputs, source, positions=spot, layers=[0, -1],
                     metric=lambda lg: logit_difference(lg, 9, 10))
    assert ld.shape == (2, 2)


def test_metrics():
    a = torch.tensor([[0.0, 1.0, 3.0], [2.0, 0.0, 5.0]])
    ld = logit_difference(a, 2, torch.tensor([0, 1]))
    torch.testing.assert_close(ld, torch.tensor([3.0, 5.0]))
    before, after = torch.tensor([1.0, -2.0, 3.0, 1.0]), torch.tensor([-1.0, -1.0, 2.0, -4.0])
    assert flip_rate(before, after) == 0.5
    torch.testing.assert_close(distribution_overlap(a, a), torch.ones(2))
    b = a.flip(-1)
    sim = distribution_overlap(a, b)
    tv = 0.5 * (a.softmax(-1) - b.softmax(-1)).abs().sum(-1)
    torch.testing.assert_close(sim, 1 - tv)


def test_patching_errors(setup):
    model, inputs, _, layout, _ = setup
    with pytest.raises(InterventionError, match="not the position"):
        patch(model, layout, {}, "blocks.0.attn.hook_pattern")
    with pytest.raises(InterventionError, match="out of range"):
        patch_sweep(model, inputs, inputs, layers=[7])
