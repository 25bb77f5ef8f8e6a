"""Edits through hook points reach the computation exactly where they should."""

from __future__ import annotations

import copy

import torch

from tests.conftest import Wrapped


def test_pattern_edge_edit_changes_only_later_positions(wrapped: Wrapped):
    layout = wrapped.model.layout(**wrapped.inputs)
    query = int(layout.select("text")[0][-3])  # a text query after the image
    key = int(layout.select("last_image")[0][0])

    def cut_edge(pattern, hook):
        pattern = pattern.clone()
        pattern[:, :, query, key] = 0.0
        return pattern

    with torch.no_grad(), wrapped.model.eager_attention():  # compare like with like, bitwise
        clean = wrapped.model(wrapped.inputs)
        edited = wrapped.model.run_with_hooks(
            wrapped.inputs, fwd_hooks=[("blocks.0.attn.hook_pattern", cut_edge)]
        )
    diff = (edited - clean).abs().amax(dim=-1)  # [batch, pos]
    diff = torch.nan_to_num(diff, nan=0.0)
    assert diff[:, :query].max().item() == 0.0
    assert diff[:, query].min().item() > 0.0


def test_zeroing_head_via_hook_z_equals_zeroing_o_proj_input_slice(wrapped: Wrapped):
    layer, head = wrapped.model.cfg.n_layers - 1, 1
    d_head = wrapped.model.cfg.d_head
    reference = copy.deepcopy(wrapped.reference)
    o_proj = reference.get_decoder().layers[layer].self_attn.o_proj

    def zero_slice(_module, args):
        x = args[0].clone()
        x[..., head * d_head : (head + 1) * d_head] = 0.0
        return (x,)

    handle = o_proj.register_forward_pre_hook(zero_slice)
    with torch.no_grad():
        expected = reference(**wrapped.inputs).logits
    handle.remove()

    def zero_head(z, hook):
        z = z.clone()
        z[:, :, head] = 0.0
        return z

    with torch.no_grad():
        got = wrapped.model.run_with_hooks(
            wrapped.inputs, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero_head)]
        )
        clean = wrapped.model(wrapped.inputs)
    finite = torch.isfinite(expected) & (expected > -1e30)
    assert (got - expected)[finite].abs().max().item() <= 1e-5
    assert (got - clean)[finite].abs().max().item() > 1e-4  # the head mattered
