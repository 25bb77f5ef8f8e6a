"""Head ablation: batched masks equal one-by-one, baseline_kv semantics, prefix reuse, errors."""

from __future__ import annotations

import pytest
import torch

from hooked_vlm.interventions import (
    InterventionError,
    KVBaseline,
    evaluate_head_masks,
    head_ablation,
    knockout,
    kv_baseline,
    mean_head_outputs,
    repeat_layout,
    resolve,
)
from tests.conftest import same_text_two_images


@pytest.fixture(scope="module", params=["llava", "chameleon", "emu3"])
def setup(request):
    return same_text_two_images(request.param)


def _first(inputs):
    return {k: v[:1] for k, v in inputs.items()}


def _masks(model, n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, model.cfg.n_layers, model.cfg.n_heads, generator=gen) > 0.5).float()


def _extra(model, inputs, layout, mode):
    if mode == "mean":
        return {"mean": mean_head_outputs(model, inputs, layout)}
    if mode == "baseline_kv":
        return {"baseline": kv_baseline(model, inputs)}
    return {}


@pytest.mark.parametrize("mode", ["zero", "mean", "baseline_kv", "knockout"])
def test_batched_masks_equal_masks_one_by_one(setup, mode):
    model, inputs, layout = setup
    one = _first(inputs)
    one_layout = model.layout(**one)
    extra = _extra(model, inputs, layout, mode)
    masks = _masks(model, 4)
    big = {k: v.repeat_interleave(4, 0) for k, v in one.items()}
    hooks = head_ablation(model, repeat_layout(one_layout, 4), masks, mode, **extra)
    batched = model.run_with_hooks(big, fwd_hooks=hooks)
    for i in range(4):
        single = model.run_with_hooks(
            one, fwd_hooks=head_ablation(model, one_layout, masks[i : i + 1], mode, **extra)
        )
        torch.testing.assert_close(batched[i : i + 1], single, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["zero", "mean", "baseline_kv", "knockout"])
def test_keep_everything_is_a_no_op_and_ablation_changes_text(setup, mode):
    model, inputs, layout = setup
    extra = _extra(model, inputs, layout, mode)
    clean = model(inputs)
    keep = torch.ones(2, model.cfg.n_layers, model.cfg.n_heads)
    assert len(head_ablation(model, layout, keep, mode, **extra)) == 0
    cut = model.run_with_hooks(
        inputs, fwd_hooks=head_ablation(model, layout, keep * 0, mode, **extra)
    )
    assert (cut - clean).abs().max() > 1e-4


def test_baseline_kv_of_another_image_makes_text_see_that_image(setup):
    """Text queries see image B's keys/values in every head and layer: text = run B's text."""
    model, inputs, layout = setup
    swapped = {k: v.flip(0) for k, v in inputs.items()}
    baseline = kv_baseline(model, swapped, average=False)
    masks = torch.zeros(2, model.cfg.n_layers, model.cfg.n_heads)
    hooks = head_ablation(model, layout, masks, "baseline_kv", keys="image_and_eoi",
                          baseline=baseline)
    text = resolve(layout, "text_after_image").mask[0]
    got = model.run_with_hooks(inputs, fwd_hooks=hooks)[:, text]
    want = model(swapped)[:, text]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    own = head_ablation(model, layout, masks, "baseline_kv", keys="image_and_eoi",
                        baseline=kv_baseline(model, inputs, average=False))
    torch.testing.assert_close(model.run_with_hooks(inputs, fwd_hooks=own), model(inputs),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["zero", "baseline_kv", "knockout"])
def test_evaluate_head_masks_prefix_reuse_equals_full_recompute(setup, mode):
    model, inputs, layout = setup
    one = _first(inputs)
    extra = _extra(model, inputs, layout, mode)
    masks = _masks(model, 5, seed=3)

    def metric(lg):
        return lg.log_softmax(-1)[:, 9]

    kw = dict(batch_size=2, queries="text_after_image", **extra)
    fast = evaluate_head_masks(model, one, masks, metric, mode, **kw)
    slow = evaluate_head_masks(model, one, masks, metric, mode, reuse_prefix=False, **kw)
    assert fast.shape == (5,)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)


def test_knockout_mode_is_the_per_head_mask_knockout(setup):
    """Row b ablating head (l, h) equals knockout(text -> image, layers=l, heads=h)."""
    model, inputs, layout = setup
    masks = torch.ones(2, model.cfg.n_layers, model.cfg.n_heads)
    masks[0, 0, 1] = 0
    masks[1, -1, 0] = 0
    got = model.run_with_hooks(inputs, fwd_hooks=head_ablation(model, layout, masks, "knockout"))
    for b, (layer, head) in enumerate([(0, 1), (model.cfg.n_layers - 1, 0)]):
        hooks = knockout(model, layout, "text", "image", layers=layer, heads=head, mode="mask")
        want = model.run_with_hooks(inputs, fwd_hooks=hooks)[b]
        torch.testing.assert_close(got[b], want, atol=1e-5, rtol=0)


def test_clear_errors(setup):
    model, inputs, layout = setup
    cfg = model.cfg
    with pytest.raises(InterventionError, match="n_layers, n_heads"):
        head_ablation(model, layout, torch.ones(2, cfg.n_layers + 1, cfg.n_heads))
    with pytest.raises(InterventionError, match="layout has 2 examples"):
        head_ablation(model, layout, torch.ones(3, cfg.n_layers, cfg.n_heads))
    masks = torch.zeros(2, cfg.n_layers, cfg.n_heads)
    with pytest.raises(InterventionError, match="mean="):
        head_ablation(model, layout, masks, "mean")
    with pytest.raises(InterventionError, match="baseline="):
        head_ablation(model, layout, masks, "baseline_kv")
    with pytest.raises(InterventionError, match="0/1"):
        baseline = kv_baseline(model, inputs)
        head_ablation(model, layout, masks + 0.5, "baseline_kv", baseline=baseline)
    with pytest.raises(InterventionError, match="accepted"):
        head_ablation(model, layout, masks, "shuffle")
    full = kv_baseline(model, inputs)
    short = KVBaseline([k[:, :3] for k in full.keys], [v[:, :3] for v in full.values])
    with pytest.raises(InterventionError, match="cover positions 0..2"):
        head_ablation(model, layout, masks, "baseline_kv", baseline=short)
