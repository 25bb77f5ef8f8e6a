"""Vision towers: per-layer hooks readable and equal to HF, attention patterns editable (or a
clear error); Qwen2-VL's M-RoPE on a reused prefix."""

from __future__ import annotations

import re

import pytest
import torch
from transformer_lens.model_bridge.sources import build_bridge_from_module

from hooked_vlm.adapters import PatternEditError
from hooked_vlm.adapters.vision import guard_native_attention
from hooked_vlm.testing.tiny import build_tiny
from tests.conftest import ALL_ARCHS, Wrapped, first_image_dependent, wrap

VISION_ARCHS = [a for a in ALL_ARCHS if not a.startswith(("chameleon", "emu3"))]  # VQ: no tower


@pytest.fixture(scope="module", params=VISION_ARCHS)
def tower(request) -> Wrapped:
    return wrap(request.param)


def vision_prefix(w: Wrapped) -> str:
    """``vision_encoder.encoder_layers`` (ViTs) or ``vision_encoder.blocks`` (Qwen2-VL)."""
    names = (n for n in w.model.hook_names if n.endswith(".0.attn.hook_pattern"))
    return next(n for n in names if n.startswith("vision_encoder")).rsplit(".0.", 1)[0]


def hf_vision_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and re.search(r"vision|visual", name) \
                and re.search(r"(layers|blocks|layer)$", name):
            return module
    raise AssertionError("no vision layers")


def test_vision_residuals_readable_and_equal_hf(tower: Wrapped):
    layers = hf_vision_layers(tower.reference)
    outputs: list[torch.Tensor] = []
    handles = [layer.register_forward_hook(
        lambda _m, _i, out: outputs.append(out[0] if isinstance(out, tuple) else out))
        for layer in layers]
    try:
        with torch.no_grad():
            tower.reference(**tower.inputs)
    finally:
        for h in handles:
            h.remove()
    prefix = vision_prefix(tower)
    with torch.no_grad():
        _, cache = tower.model.run_with_cache(
            tower.inputs, names_filter=lambda n: n.startswith(prefix) and n.endswith(
                ("hook_resid_post", "attn.hook_pattern")))
    for layer, expected in enumerate(outputs):
        got = cache[f"{prefix}.{layer}.hook_resid_post"]
        assert (got - expected).abs().max().item() <= 1e-4, layer
        pattern = cache[f"{prefix}.{layer}.attn.hook_pattern"]
        assert torch.allclose(pattern.sum(-1), torch.ones(()), atol=1e-4)


@pytest.mark.parametrize("in_place", [False, True])
def test_vision_pattern_edit_changes_only_image_dependent_positions(tower: Wrapped, in_place):
    name = f"{vision_prefix(tower)}.0.attn.hook_pattern"

    def keep_diagonal(pattern, hook):
        eye = torch.eye(pattern.shape[-1], dtype=pattern.dtype)
        if in_place:
            pattern.mul_(eye)
            return pattern
        return pattern * eye

    layout = tower.model.layout(**tower.inputs)
    with torch.no_grad():
        clean = tower.model(tower.inputs)
        edited = tower.model.run_with_hooks(tower.inputs, fwd_hooks=[(name, keep_diagonal)])
    diff = (edited - clean).abs().amax(-1)
    first = first_image_dependent(layout)  # the first image position (or its attention block)
    if first:
        assert diff[:, :first].max().item() <= 1e-6  # before the image: untouched
    assert diff.max().item() > 1e-5  # the edit reached the logits


def test_observe_only_attention_raises_on_edit():
    tiny = build_tiny("llava")
    bridge = build_bridge_from_module(tiny.model, "LlavaForConditionalGeneration",
                                      hf_config=tiny.model.config)  # TL's own: CLIP observed
    assert guard_native_attention(bridge)
    ids, kw = tiny.inputs["input_ids"], {k: v for k, v in tiny.inputs.items() if k != "input_ids"}
    hook = "vision_encoder.encoder_layers.0.attn.hook_pattern"
    with torch.no_grad():
        _, cache = bridge.run_with_cache(ids, names_filter=lambda n: n == hook, **kw)
    assert cache[hook].ndim == 4  # reading is fine

    def zero_in_place(pattern, hook):
        pattern.zero_()

    with pytest.raises(PatternEditError, match="only observes the pattern"), torch.no_grad():
        bridge.run_with_hooks(ids, fwd_hooks=[(hook, zero_in_place)], **kw)


def test_qwen2_vl_suffix_on_reused_prefix_matches_full_run():
    w = wrap("qwen2_vl")
    ids, mask = w.inputs["input_ids"], w.inputs["attention_mask"]
    stop = max(s for _, s in w.tiny.extras["image_spans"]) + 1
    prefix = {k: (v[:, :stop] if k in ("attention_mask", "mm_token_type_ids") else v)
              for k, v in w.inputs.items() if k != "input_ids"}
    with torch.no_grad():
        full = w.model(w.inputs)
        _, past = w.model.run_with_kv_cache({"input_ids": ids[:, :stop], **prefix})
        suffix = w.model(input_ids=ids[:, stop:], attention_mask=mask, past_key_values=past)
    assert (suffix - full[:, stop:]).abs().max().item() <= 1e-4


def test_qwen2_vl_text_pattern_edit_uses_m_rope_layout():
    """An EOI-column knockout in every decoder layer changes the text after the image only."""
    w = wrap("qwen2_vl")
    layout = w.model.layout(w.inputs["input_ids"])
    eoi = [int(p) for (p,) in layout.select("eoi")]

    def cut_eoi(pattern, hook):
        pattern = pattern.clone()
        for b, pos in enumerate(eoi):
            pattern[b, :, pos + 1 :, pos] = 0.0
        return pattern

    with torch.no_grad(), w.model.eager_attention():  # bitwise: same attention path
        clean = w.model(w.inputs)
        edited = w.model.run_with_hooks(
            w.inputs, fwd_hooks=[(lambda n: n.startswith("blocks.") and n.endswith(
                "attn.hook_pattern"), cut_eoi)])
    diff = (edited - clean).abs().amax(-1)
    for b, pos in enumerate(eoi):
        assert diff[b, : pos + 1].max().item() <= 1e-6  # float noise of batched matmuls only
        assert diff[b, pos + 1 :].min().item() > 1e-5
