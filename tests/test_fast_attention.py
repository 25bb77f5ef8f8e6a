"""SDPA where nothing is watched: the fast path equals the eager recomputation."""

from __future__ import annotations

import pytest
import torch
from transformer_lens.model_bridge.generalized_components import (
    PositionEmbeddingsAttentionBridge,
)

from hooked_vlm.interventions import knockout
from tests.conftest import Wrapped, wrap


@pytest.fixture(scope="module", params=["llava", "chameleon", "emu3"])
def w(request) -> Wrapped:
    return wrap(request.param)


@pytest.fixture
def eager_calls(monkeypatch) -> list[str]:
    """Names of the layers that ran TL's Python recomputation during the test."""
    calls: list[str] = []
    original = PositionEmbeddingsAttentionBridge.forward

    def counting(self, *args, **kwargs):
        calls.append(self.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PositionEmbeddingsAttentionBridge, "forward", counting)
    return calls


def test_unwatched_layers_run_sdpa_and_match_eager(w: Wrapped, eager_calls):
    with torch.no_grad():
        fast = w.model(w.inputs)
        assert eager_calls == []
        with w.model.eager_attention():
            eager = w.model(w.inputs)
    assert len(eager_calls) == w.model.cfg.n_layers
    keep = torch.isfinite(eager) & (eager > -1e30)
    assert (fast - eager)[keep].abs().max().item() <= 1e-5


def test_only_watched_layers_run_eager(w: Wrapped, eager_calls):
    layer = w.model.cfg.n_layers - 1
    w.model.run_with_cache(w.inputs, names_filter=f"blocks.{layer}.attn.hook_pattern")
    assert len(eager_calls) == 1 and eager_calls[0].endswith("self_attn")
    assert not w.model.bridge.blocks[0].attn.needs_eager()  # hooks were removed afterwards


def test_mask_knockout_stays_on_sdpa_and_matches_eager(w: Wrapped, eager_calls):
    layout = w.model.layout(**{k: v for k, v in w.inputs.items() if k != "pixel_values"})
    hooks = knockout(w.model, layout, "text", "image_and_eoi", mode="mask")
    with torch.no_grad():
        fast = w.model.run_with_hooks(w.inputs, fwd_hooks=hooks)
        assert eager_calls == []
        with w.model.eager_attention():
            eager = w.model.run_with_hooks(w.inputs, fwd_hooks=hooks)
        clean = w.model(w.inputs)
    keep = torch.isfinite(eager) & (eager > -1e30)
    assert (fast - eager)[keep].abs().max().item() <= 1e-5
    assert (fast - clean)[keep].abs().max().item() > 1e-4


def test_generation_with_sdpa_equals_eager(w: Wrapped):
    fast = w.model.generate(w.inputs, max_new_tokens=4, eos_token_id=[])
    with w.model.eager_attention():
        eager = w.model.generate(w.inputs, max_new_tokens=4, eos_token_id=[])
    assert torch.equal(fast, eager)
