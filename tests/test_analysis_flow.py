"""Cross-modal attention flow: shares over image-side keys, on the fly or from full patterns."""

from __future__ import annotations

import pytest
import torch

from hooked_vlm.analysis import (
    cross_modal_attention,
    flow_contributions,
    flow_masks,
    image_key_values,
    key_categories,
    text_to_image_mass,
)
from hooked_vlm.layout import SpecialTokens
from hooked_vlm.layout.token_layout import build_layout
from tests.conftest import wrap

BOS, TEXT, IMG, BOI, EOI = 1, 9, 3, 4, 5


def synthetic_layout():
    """Two examples, BOS + BOI + 4 image tokens + EOI + text, the image at different offsets."""
    ids = torch.tensor(
        [
            [BOS, TEXT, BOI, IMG, IMG, IMG, IMG, EOI, TEXT, TEXT, TEXT],
            [BOS, BOI, IMG, IMG, IMG, IMG, EOI, TEXT, TEXT, TEXT, TEXT],
        ]
    )
    return build_layout(ids, SpecialTokens(image=IMG, bos=BOS, boi=BOI, eoi=EOI))


def causal_softmax(scores: torch.Tensor) -> torch.Tensor:
    q = scores.shape[-1]
    causal = torch.ones(q, q, dtype=torch.bool).tril()
    return scores.masked_fill(~causal, float("-inf")).softmax(-1)


@pytest.fixture(scope="module")
def chameleon():
    return wrap("chameleon")


def test_shares_sum_to_one_and_follow_the_pattern(chameleon):
    w = chameleon
    layout = w.model.layout(w.inputs["input_ids"])
    _, cache = w.model.run_with_cache(w.inputs, names_filter="blocks.1.attn.hook_pattern")
    flow = cross_modal_attention(cache["blocks.1.attn.hook_pattern"], layout)
    assert torch.allclose(flow.shares.sum(1), torch.ones(2))
    assert not (flow.shares * ~layout.mask("image_and_eoi")).any()
    # a pattern where every text query attends only to EOI gives EOI the whole share
    pattern = torch.zeros_like(cache["blocks.1.attn.hook_pattern"])
    for b, (e,) in enumerate(layout.select("eoi")):
        pattern[b, :, :, e] = 1.0
    assert cross_modal_attention(pattern, layout).eoi_share == 1.0


def test_hook_reduction_equals_the_cached_patterns(chameleon):
    w = chameleon
    layout = w.model.layout(w.inputs["input_ids"])
    queries, keys = flow_masks(layout)
    masses: dict[int, torch.Tensor] = {}

    def reduce_pattern(pattern, hook):
        masses[hook.layer()] = text_to_image_mass(pattern, queries, keys)

    is_pattern = lambda name: name.endswith("attn.hook_pattern")  # noqa: E731
    w.model.run_with_hooks(w.inputs, fwd_hooks=[(is_pattern, reduce_pattern)])
    _, cache = w.model.run_with_cache(w.inputs, names_filter=is_pattern)
    n_layers = w.model.cfg.n_layers
    assert sorted(masses) == list(range(n_layers))
    for layer in range(n_layers):
        full = cross_modal_attention(cache[f"blocks.{layer}.attn.hook_pattern"], layout)
        on_the_fly = masses[layer] / masses[layer].sum(1, keepdim=True)
        assert torch.allclose(on_the_fly, full.shares, atol=1e-6)


def test_uniform_pattern_gives_uniform_shares_over_image_side_keys():
    layout = synthetic_layout()
    queries, keys = flow_masks(layout)
    n_layers, heads, pos = 3, 2, layout.seq_len
    pattern = causal_softmax(torch.zeros(2, heads, pos, pos))  # each row uniform over its past
    layer_masses = image_key_values(text_to_image_mass(pattern, queries, keys), keys)
    per_key = torch.stack([layer_masses] * n_layers)
    flow = flow_contributions(per_key.sum(1), *key_categories(layout))
    assert torch.allclose(flow.shares, torch.full((n_layers, 5), 1 / 5))
    assert torch.allclose(flow.shares.sum(1), torch.ones(n_layers))
    # EOI and last image are one key each; every other key (0.2 > 1%) is reported on its own
    assert torch.allclose(flow.eoi, torch.full((n_layers,), 0.2))
    assert torch.allclose(flow.last_image, torch.full((n_layers,), 0.2))
    assert torch.allclose(flow.salient.sum(1), torch.full((n_layers,), 0.6))
    assert torch.allclose(flow.internal_image, torch.zeros(n_layers), atol=1e-7)


def naive_flow(patterns: torch.Tensor, layout) -> torch.Tensor:
    """f_j^l straight from the definition, loops over examples, keys and queries."""
    ids_keys = layout.select("image_and_eoi")
    text = layout.mask("text")
    out = torch.zeros(patterns.shape[0], len(ids_keys[0]), dtype=torch.float64)
    for layer, pattern in enumerate(patterns):
        for b, key_positions in enumerate(ids_keys):
            last_key = int(key_positions.max())
            for offset, j in enumerate(key_positions.tolist()):
                for i in range(last_key + 1, layout.seq_len):
                    if text[b, i]:
                        out[layer, offset] += pattern[b, :, i, j].double().sum()
    return out / out.sum(1, keepdim=True)


def test_on_the_fly_reduction_equals_the_full_pattern_definition():
    layout = synthetic_layout()
    queries, keys = flow_masks(layout)
    pos = layout.seq_len
    scores = torch.randn(4, 2, 3, pos, pos, generator=torch.Generator().manual_seed(0))
    patterns = causal_softmax(scores)
    accumulated = torch.stack(
        [image_key_values(text_to_image_mass(p, queries, keys), keys).sum(0) for p in patterns]
    )
    flow = flow_contributions(accumulated, *key_categories(layout), threshold=0.15)
    assert torch.allclose(flow.shares.double(), naive_flow(patterns, layout), atol=1e-6)
    total = flow.eoi + flow.last_image + flow.salient.sum(1) + flow.internal_image
    assert torch.allclose(total, torch.ones(4))
    others = flow.shares[:, :3]  # keys 0-2 are neither EOI (4) nor the last image token (3)
    assert torch.equal(flow.salient[:, :3] > 0, others > 0.15)
    assert torch.allclose(flow.internal_image, (others * (others <= 0.15)).sum(1))


def test_categories_of_planted_masses():
    masses = torch.tensor([[0.002, 0.004, 0.05, 0.004, 0.2, 0.74]])
    eoi = torch.tensor([False] * 5 + [True])
    last = torch.tensor([False] * 4 + [True, False])
    flow = flow_contributions(masses * 7.0, eoi, last)  # scale-free
    assert flow.eoi.item() == pytest.approx(0.74)
    assert flow.last_image.item() == pytest.approx(0.2)
    assert flow.salient[0].tolist() == pytest.approx([0, 0, 0.05, 0, 0, 0])
    assert flow.internal_image.item() == pytest.approx(0.01)


def test_bad_input_is_refused():
    layout = synthetic_layout()
    queries, keys = flow_masks(layout)
    with pytest.raises(ValueError, match="needs query_mask"):
        text_to_image_mass(torch.rand(2, 1, 11, 11), queries[:, :5], keys)
    uneven = keys.clone()
    uneven[0, 3] = False
    with pytest.raises(ValueError, match=r"\[4, 5\] image-side keys"):
        image_key_values(torch.rand(2, 11), uneven)
    no_text = build_layout(torch.tensor([[BOS, TEXT, BOI, IMG, IMG, EOI]]), layout.tokens)
    with pytest.raises(ValueError, match="no text after their last image"):
        flow_masks(no_text)
    with pytest.raises(ValueError, match="zero text->image mass"):
        none = torch.zeros(5, dtype=torch.bool)
        flow_contributions(torch.zeros(1, 5), none, none)
