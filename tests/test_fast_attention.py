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
    layout = w.model.layout(**w.inputs)
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


def _model_mask_kind(w: Wrapped) -> str:
    """What HF builds the decoder mask with: the config shared by the text model."""
    first = w.model.bridge.blocks[0].original_component
    text = next(m for m in w.model.bridge.original_model.modules()
                if isinstance(getattr(m, "layers", None), torch.nn.ModuleList)
                and any(layer is first or layer is w.model.bridge.blocks[0] for layer in m.layers))
    return text.config._attn_implementation


def test_decoder_mask_is_hf_sdpa_and_hooks_see_it_additive(w: Wrapped):
    """HF's SDPA mask (None for a plain causal batch, so the kernel's is_causal, as HF's own
    SDPA model runs) reaches every layer; a hook on hook_attn_mask and the eager recomputation
    see the additive float mask HF's eager attention would have been given."""
    assert _model_mask_kind(w) == "sdpa"
    layer = w.model.cfg.n_layers - 1
    seen: list[torch.Tensor] = []

    def keep(mask, hook):
        seen.append(mask)
        return mask

    with torch.no_grad():
        clean = w.model(w.inputs)
        hooked = w.model.run_with_hooks(
            w.inputs, fwd_hooks=[(f"blocks.{layer}.attn.hook_attn_mask", keep)])
        with w.model.eager_attention():
            eager = w.model(w.inputs)
    (mask,) = seen
    n = w.inputs["input_ids"].shape[1]
    assert mask.shape == (w.inputs["input_ids"].shape[0], 1, n, n)
    assert mask.dtype == clean.dtype
    allowed = torch.ones(n, n, dtype=torch.bool).tril()
    causal = torch.where(allowed, 0.0, torch.finfo(mask.dtype).min).to(mask.dtype)
    assert torch.equal(mask[:, 0], causal.expand_as(mask[:, 0]))  # HF's eager mask, exactly
    assert (hooked - clean).abs().max().item() <= 1e-5
    finite = torch.isfinite(eager) & (eager > -1e30)
    assert (clean - eager)[finite].abs().max().item() <= 1e-5


def test_generation_with_a_mask_hook_builds_the_cached_layer_mask(w: Wrapped):
    """During decoding the mask a hook sees spans the keys cached at its own layer plus the new
    one (HF passes None there): an identity hook on the last layer changes no token."""
    layer = w.model.cfg.n_layers - 1
    shapes: list[tuple[int, ...]] = []

    def keep(mask, hook):
        shapes.append(tuple(mask.shape))
        return mask

    clean = w.model.generate(w.inputs, max_new_tokens=3, eos_token_id=[])
    hooked = w.model.generate(w.inputs, max_new_tokens=3, eos_token_id=[],
                              fwd_hooks=[(f"blocks.{layer}.attn.hook_attn_mask", keep)])
    assert torch.equal(clean, hooked)
    n = w.inputs["input_ids"].shape[1]
    assert [s[2:] for s in shapes] == [(n, n), (1, n + 1), (1, n + 2)]


@pytest.fixture
def twin_calls(w: Wrapped, monkeypatch) -> list[str]:
    """Names of the layers that ran their pristine HF twin (see hooked_vlm.fast_layers)."""
    calls: list[str] = []
    for i, block in enumerate(w.model.bridge.blocks):
        twin = block.__dict__["_bypass_twin"]
        original = type(twin).forward

        def counting(*args, _twin=twin, _name=f"blocks.{i}", _original=original, **kwargs):
            calls.append(_name)
            return _original(_twin, *args, **kwargs)

        monkeypatch.setattr(twin, "forward", counting, raising=False)
    return calls


def test_unwatched_layers_run_as_plain_hf_and_watched_ones_bridged(w: Wrapped, twin_calls):
    n = w.model.cfg.n_layers
    with torch.no_grad():
        plain = w.model(w.inputs)
        assert twin_calls == [f"blocks.{i}" for i in range(n)]
        twin_calls.clear()
        # a norm's internals exist only on the bridge; a residual is a module boundary
        # (hooked_vlm.boundary_hooks), fired from the plain HF layer
        names = ["blocks.1.ln1.hook_scale", "blocks.0.hook_resid_post"]
        logits, cache = w.model.run_with_cache(w.inputs, names_filter=names)
    assert twin_calls == [f"blocks.{i}" for i in range(n) if i != 1]
    assert set(names) <= set(cache.keys())
    keep = torch.isfinite(plain) & (plain > -1e30)
    assert (logits - plain)[keep].abs().max().item() <= 1e-5


def test_pytorch_hooks_are_honoured_on_either_path(w: Wrapped, twin_calls):
    seen = []
    block = w.model.bridge.blocks[0]
    hf_mlp = block.mlp.original_component  # an HF module: its hooks are shared with the twin
    handle = hf_mlp.register_forward_hook(lambda mod, args, out: seen.append("hf"))
    with torch.no_grad():
        w.model(w.inputs)
    handle.remove()
    assert seen == ["hf"] and "blocks.0" in twin_calls
    twin_calls.clear()
    handle = block.mlp.register_forward_hook(lambda mod, args, out: seen.append("bridge"))
    with torch.no_grad():
        w.model(w.inputs)  # a hook on an inner bridge component: layer 0 runs bridged
    handle.remove()
    assert seen == ["hf", "bridge"] and "blocks.0" not in twin_calls
    twin_calls.clear()
    with w.model.eager_attention(), torch.no_grad():
        w.model(w.inputs)
    assert twin_calls == []  # eager_attention() bridges every layer


def test_hf_hidden_states_are_captured_on_the_plain_path(w: Wrapped):
    with torch.no_grad():
        out = w.model.hf_model(**w.inputs, output_hidden_states=True)
        _, cache = w.model.run_with_cache(w.inputs, names_filter="blocks.0.hook_resid_post")
    assert len(out.hidden_states) == w.model.cfg.n_layers + 1
    assert (out.hidden_states[1] - cache["blocks.0.hook_resid_post"]).abs().max() <= 1e-5


def test_layers_with_instance_patched_forwards_keep_the_bridged_path():
    from hooked_vlm import HookedVLM
    from hooked_vlm.fast_layers import install_layer_bypass
    from hooked_vlm.testing.tiny import build_tiny

    tiny = build_tiny("llava")
    mlp = tiny.model.model.language_model.layers[0].mlp
    calls = []
    original = mlp.forward

    def patched(*args, **kwargs):  # what accelerate's dispatch hooks do to a module
        calls.append(1)
        return original(*args, **kwargs)

    mlp.forward = patched
    model = HookedVLM.from_hf(tiny.model)
    assert "_bypass_twin" not in model.bridge.blocks[0].__dict__
    assert "_bypass_twin" in model.bridge.blocks[1].__dict__
    assert install_layer_bypass(model.bridge) == 0  # idempotent
    with torch.no_grad():
        model(tiny.inputs)
    assert calls == [1]
