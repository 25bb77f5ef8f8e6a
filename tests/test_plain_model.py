"""When a forward skips the bridge altogether (hooked_vlm.plain_model): only while nothing
could tell the difference, and HF's recorded-state hooks are installed once for both paths."""

from __future__ import annotations

import pytest
import torch

from .conftest import Wrapped, wrap


@pytest.fixture(scope="module")
def w() -> Wrapped:
    return wrap("llava")


def _hf_hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_recorded_states_are_hooked_once_whichever_path_installs_them(w: Wrapped):
    # LLaVA's projector reads the vision tower's recorded hidden states: HF installs the
    # recording hooks the first time, through whichever copy of the model runs first
    model = w.model
    with torch.no_grad():
        first = model(w.inputs)  # the plain twin installs them
        hooks = _hf_hook_count(model.hf_model)
        logits, cache = model.run_with_cache(w.inputs, names_filter="blocks.0.hook_resid_post")
        again = model(w.inputs)
    assert _hf_hook_count(model.hf_model) == hooks  # the bridged path did not add a second set
    assert torch.equal(first, again)
    assert (logits - first).abs().max().item() <= 1e-5


def test_the_bridge_runs_whenever_anything_is_watched(w: Wrapped):
    model, plain = w.model, w.model._plain
    assert plain.unwatched()
    with model.hooks([("blocks.0.hook_resid_post", lambda x, hook: x)]):
        assert not plain.unwatched()
    assert plain.unwatched()
    handle = model.bridge.blocks[0].mlp.register_forward_hook(lambda *args: None)
    assert not plain.unwatched()  # a PyTorch hook on a bridge component
    handle.remove()
    assert plain.unwatched()
    with model.eager_attention():
        assert not plain.unwatched()
    model.bridge.train()
    assert not plain.unwatched()
    model.bridge.eval()
    model.bridge.cfg.use_attn_result = True
    assert not plain.unwatched()
    model.bridge.cfg.use_attn_result = False
    assert plain.unwatched()


def test_inputs_that_the_bridge_treats_differently_take_the_bridge(w: Wrapped):
    plain = w.model._plain
    ids = w.inputs["input_ids"]
    assert plain.takes({"attention_mask": torch.ones_like(ids)})
    right = torch.ones_like(ids)
    right[:, -2:] = 0
    assert plain.takes({"attention_mask": right})
    left = torch.ones_like(ids)
    left[:, :2] = 0  # TransformerLens turns left padding into position ids
    assert not plain.takes({"attention_mask": left})
    assert not plain.takes({"output_hidden_states": True})
    assert not plain.takes({"output_attentions": True})
    handle = w.model.bridge.register_forward_hook(lambda *args: None)
    assert not plain.takes({})  # a hook on the bridge itself needs its call
    handle.remove()
    assert plain.takes({})


def test_run_with_cache_skips_transformerlens_forward_only_where_it_passes_inputs_through(
    w: Wrapped, monkeypatch
):
    """run_with_cache keeps TransformerLens' hooks and cache but calls the HF model with its
    bridges directly where TL's forward would hand the inputs on unchanged; with left padding
    (TL derives position ids) TL's forward runs. The cache is the same either way."""
    bridge = w.model.bridge
    calls: list[int] = []
    original = type(bridge).forward

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(bridge), "forward", counting)
    names = [f"blocks.{i}.hook_resid_post" for i in range(w.model.cfg.n_layers)]
    logits, lean = w.model.run_with_cache(w.inputs, names_filter=names)
    assert calls == [] and "forward" not in bridge.__dict__
    assert sorted(lean.keys()) == sorted(names)
    ids = w.inputs["input_ids"]
    left = torch.ones_like(ids)
    left[:, :1] = 0
    padded = {**w.inputs, "attention_mask": left}
    w.model.run_with_cache(padded, names_filter=names)
    assert calls == [1] and "forward" not in bridge.__dict__
    monkeypatch.undo()
    with torch.no_grad():
        full_logits = bridge(ids, **{k: v for k, v in w.inputs.items() if k != "input_ids"})
    assert torch.equal(logits, full_logits)
    _, through_tl = bridge.run_with_cache(
        ids, names_filter=names, **{k: v for k, v in w.inputs.items() if k != "input_ids"})
    for name in names:
        assert torch.equal(lean[name], through_tl[name])
