"""The gate property on every architecture: with every text->image edge masked in every layer,
text after the image cannot depend on the pixels; with the edges open it does."""

from __future__ import annotations

import pytest
import torch

from hooked_vlm.interventions import (
    PrefixCache,
    evaluate_head_masks,
    knockout,
    kv_baseline,
    resolve,
)
from tests.conftest import ALL_ARCHS, generate_by_recompute, image_dependent, wrap


@pytest.mark.parametrize("name", ALL_ARCHS)
def test_masking_text_to_image_makes_text_independent_of_the_pixels(name):
    w = wrap(name)
    layout = w.model.layout(**w.inputs)
    after = resolve(layout, "text_after_image").mask
    noisy = {**w.inputs}
    gen = torch.Generator().manual_seed(0)
    pixels = w.inputs["pixel_values"]
    real = pixels != 0  # Idefics3 pads missing tiles with zeros: keep them padding
    noisy["pixel_values"] = pixels + real * torch.randn(pixels.shape, generator=gen)
    gate = knockout(w.model, layout, "text", image_dependent(layout), mode="mask")
    with torch.no_grad():
        closed = [w.model.run_with_hooks(x, fwd_hooks=gate)[after] for x in (w.inputs, noisy)]
        opened = [w.model(x)[after] for x in (w.inputs, noisy)]
    keep = torch.isfinite(opened[0]) & (opened[0] > -1e30)
    assert (closed[0] - closed[1])[keep].abs().max().item() <= 1e-5
    assert (opened[0] - opened[1])[keep].abs().max().item() > 1e-4


# PaliGemma's image opens a bidirectional prefix at position 0: no prefix to reuse
# (tests/test_families.py covers its fallback and its reuse for the suffix).
@pytest.mark.parametrize("name", [a for a in ALL_ARCHS if a != "paligemma"])
def test_prefix_reuse_equals_full_recompute(name):
    w = wrap(name)
    layout = w.model.layout(**w.inputs)
    hooks = knockout(w.model, layout, "text", "last_image", mode="zero")
    with torch.no_grad():
        full = w.model.run_with_hooks(w.inputs, fwd_hooks=hooks)
        reused = PrefixCache.build(w.model, w.inputs, hooks.start).run(hooks)
    tail = full[:, hooks.start :]
    keep = torch.isfinite(tail) & (tail > -1e30)
    assert (reused - tail)[keep].abs().max().item() <= 1e-5


@pytest.mark.parametrize("name", ALL_ARCHS)
@pytest.mark.parametrize("mode", ["zero", "baseline_kv"])
def test_batched_head_masks_on_a_reused_prefix_equal_one_by_one(name, mode):
    w = wrap(name)
    one = w.tiny.example(1)
    pixels = one["pixel_values"]  # baseline: another image (noise where pixels are real)
    noise = torch.randn(pixels.shape, generator=torch.Generator().manual_seed(1))
    blank = {**one, "pixel_values": pixels + (pixels != 0) * noise}
    kw = {"baseline": kv_baseline(w.model, blank)} if mode == "baseline_kv" else {}
    cfg = w.model.cfg
    masks = (torch.rand(5, cfg.n_layers, cfg.n_heads, generator=torch.Generator().manual_seed(0))
             > 0.4).float()
    masks[0] = 1.0  # keep every head: the clean output

    def metric(logits):
        return logits.float().log_softmax(-1)[:, :8]

    batched = evaluate_head_masks(w.model, one, masks, metric, mode, batch_size=5,
                                  queries="text_after_image", **kw)
    naive = evaluate_head_masks(w.model, one, masks, metric, mode, batch_size=1,
                                reuse_prefix=False, queries="text_after_image", **kw)
    assert (batched - naive).abs().max().item() <= 1e-5
    with torch.no_grad():
        clean = metric(w.model(one)[:, -1])
    assert (batched[0] - clean[0]).abs().max().item() <= 1e-5
    assert (batched[1:] - clean).abs().amax().item() > 1e-4  # ablating heads matters


@pytest.mark.parametrize("name", ALL_ARCHS)
def test_generation_under_knockout_with_kv_cache_equals_full_recompute(name):
    w = wrap(name)
    layout = w.model.layout(**w.inputs)
    hooks = knockout(w.model, layout, "text", "random_image:2", mode="zero", seed=3)
    fast = w.model.generate(w.inputs, max_new_tokens=3, fwd_hooks=hooks, eos_token_id=[])
    assert torch.equal(fast, generate_by_recompute(w.model, w.inputs, hooks, 3))
