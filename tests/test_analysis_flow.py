"""Cross-modal attention flow: shares are a distribution over image-side keys."""

from __future__ import annotations

import torch

from hooked_vlm.analysis import cross_modal_attention
from tests.conftest import wrap


def test_shares_sum_to_one_and_follow_the_pattern():
    w = wrap("chameleon")
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
