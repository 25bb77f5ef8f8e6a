"""The gate property on every architecture: with every text->image edge masked in every layer,
text after the image cannot depend on the pixels; with the edges open it does."""

from __future__ import annotations

import pytest
import torch

from hooked_vlm.interventions import PrefixCache, knockout, resolve
from tests.conftest import ALL_ARCHS, wrap


def _layout(w):
    return w.model.layout(**{k: v for k, v in w.inputs.items() if k != "pixel_values"})


@pytest.mark.parametrize("name", ALL_ARCHS)
def test_masking_text_to_image_makes_text_independent_of_the_pixels(name):
    w = wrap(name)
    layout = _layout(w)
    after = resolve(layout, "text_after_image").mask
    noisy = {**w.inputs}
    gen = torch.Generator().manual_seed(0)
    pixels = w.inputs["pixel_values"]
    real = pixels != 0  # Idefics3 pads missing tiles with zeros: keep them padding
    noisy["pixel_values"] = pixels + real * torch.randn(pixels.shape, generator=gen)
    gate = knockout(w.model, layout, "text", "image_and_eoi", mode="mask")
    with torch.no_grad():
        closed = [w.model.run_with_hooks(x, fwd_hooks=gate)[after] for x in (w.inputs, noisy)]
        opened = [w.model(x)[after] for x in (w.inputs, noisy)]
    keep = torch.isfinite(opened[0]) & (opened[0] > -1e30)
    assert (closed[0] - closed[1])[keep].abs().max().item() <= 1e-5
    assert (opened[0] - opened[1])[keep].abs().max().item() > 1e-4


@pytest.mark.parametrize("name", ALL_ARCHS)
def test_prefix_reuse_equals_full_recompute(name):
    w = wrap(name)
    layout = _layout(w)
    hooks = knockout(w.model, layout, "text", "last_image", mode="zero")
    with torch.no_grad():
        full = w.model.run_with_hooks(w.inputs, fwd_hooks=hooks)
        reused = PrefixCache.build(w.model, w.inputs, hooks.start).run(hooks)
    tail = full[:, hooks.start :]
    keep = torch.isfinite(tail) & (tail > -1e30)
    assert (reused - tail)[keep].abs().max().item() <= 1e-5
