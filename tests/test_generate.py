"""Greedy generation with a KV cache equals HF's, and hooks run at every step."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import GENERATE_ARCHS, wrap


@pytest.mark.parametrize("name", GENERATE_ARCHS)
def test_greedy_generation_matches_hf(name):
    w = wrap(name)
    new = 6
    # plain greedy on both sides: min_new_tokens would suppress EOS in HF only
    w.reference.generation_config.eos_token_id = None
    with torch.no_grad():
        expected = w.reference.generate(**w.inputs, max_new_tokens=new, do_sample=False)
    got = w.model.generate(w.inputs, max_new_tokens=new, eos_token_id=[])
    assert torch.equal(got, expected)


def test_hooks_fire_at_every_step_with_the_query_position():
    w = wrap("llava")
    seen: list[tuple[int, int]] = []

    def record(resid, hook):
        seen.append((w.model.state.query_start, resid.shape[1]))
        return resid

    prompt_len = w.inputs["input_ids"].shape[1]
    w.model.generate(w.inputs, max_new_tokens=3, eos_token_id=[],
                     fwd_hooks=[("blocks.0.hook_resid_post", record)])
    assert seen == [(0, prompt_len), (prompt_len, 1), (prompt_len + 1, 1)]
    assert w.model.state.query_start == 0


def test_left_padded_generation_matches_unpadded():
    w = wrap("llava")
    one = {k: v[:1] for k, v in w.inputs.items()}
    ids = torch.cat([torch.zeros(1, 3, dtype=torch.long), one["input_ids"]], 1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), one["attention_mask"]], 1)
    padded = {**one, "input_ids": ids, "attention_mask": mask}
    plain = w.model.generate(one, max_new_tokens=4, eos_token_id=[])
    left = w.model.generate(padded, max_new_tokens=4, eos_token_id=[])
    assert torch.equal(left[:, 3:], plain)
