"""HookedVLM equals HF's own forward: logits, every layer's residual, every attention pattern."""

from __future__ import annotations

import pytest
import torch

from hooked_vlm import HookedVLM
from tests.conftest import Wrapped

TOL = 1e-4


def hf_layer_outputs(wrapped: Wrapped) -> tuple[torch.Tensor, list[torch.Tensor], tuple]:
    """HF logits, decoder-layer outputs (captured by forward hooks) and attentions."""
    layers = wrapped.reference.get_decoder().layers
    outputs: list[torch.Tensor] = []
    handles = [
        layer.register_forward_hook(lambda _m, _i, out: outputs.append(
            out[0] if isinstance(out, tuple) else out))
        for layer in layers
    ]
    try:
        with torch.no_grad():
            out = wrapped.reference(**wrapped.inputs, output_attentions=True)
    finally:
        for h in handles:
            h.remove()
    return out.logits, outputs, out.attentions


def finite_max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max |a-b| over entries finite in b (Chameleon masks image-code logits to -inf-ish)."""
    keep = torch.isfinite(b) & (b > torch.finfo(b.dtype).min)
    assert torch.equal(keep, torch.isfinite(a) & (a > torch.finfo(a.dtype).min))
    return (a - b)[keep].abs().max().item()


def test_two_images_give_different_logits(wrapped: Wrapped):
    logits = wrapped.model(wrapped.inputs)
    assert logits.shape[0] == 2
    layout = wrapped.model.layout(**wrapped.inputs)
    assert layout.n_images() == [1, 1]
    # pixel_values: one image per row, or tiles / flattened patches of both images (Qwen2-VL)
    pixels = wrapped.inputs["pixel_values"].flatten(1)
    assert pixels.shape[0] >= 2 and not torch.allclose(pixels[0], pixels[-1])


def test_logits_residuals_and_patterns_match_hf(wrapped: Wrapped):
    hf_logits, hf_resid, hf_patterns = hf_layer_outputs(wrapped)
    with torch.no_grad():
        logits, cache = wrapped.model.run_with_cache(
            wrapped.inputs,
            names_filter=lambda n: n.endswith(("hook_resid_post", "attn.hook_pattern"))
            and n.startswith("blocks."),
        )
    assert finite_max_diff(logits, hf_logits) <= TOL
    n_layers = wrapped.model.cfg.n_layers
    assert len(hf_resid) == n_layers == len(hf_patterns)
    for layer in range(n_layers):
        resid = cache[f"blocks.{layer}.hook_resid_post"]
        assert (resid - hf_resid[layer]).abs().max().item() <= TOL, layer
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]
        assert pattern.shape == hf_patterns[layer].shape
        assert (pattern - hf_patterns[layer]).abs().max().item() <= TOL, layer


def test_save_pretrained_and_load_local_dir(wrapped: Wrapped, tmp_path):
    wrapped.reference.save_pretrained(tmp_path)
    loaded = HookedVLM.from_pretrained(tmp_path, dtype="float32")
    assert type(loaded.hf_model) is type(wrapped.reference)
    with torch.no_grad():
        expected = wrapped.model(wrapped.inputs)
        got = loaded(wrapped.inputs)
    assert finite_max_diff(got, expected) <= TOL


@pytest.mark.parametrize("name", ["llava", "chameleon"])
def test_bf16_load_runs_in_bf16(name, tmp_path):
    from hooked_vlm.testing.tiny import build_tiny

    tiny = build_tiny(name)
    tiny.model.save_pretrained(tmp_path)
    model = HookedVLM.from_pretrained(tmp_path, dtype="bf16")
    assert model.dtype == torch.bfloat16
    with torch.no_grad():
        logits, cache = model.run_with_cache(tiny.inputs, names_filter="blocks.0.hook_resid_post")
    assert cache["blocks.0.hook_resid_post"].dtype == torch.bfloat16
    # HF's own model loaded the same way is the reference: in bf16 a near-tie in Chameleon's VQ
    # quantiser can pick another code than fp32 does (transformers 5.24), so fp32 is not.
    reference = type(tiny.model).from_pretrained(
        tmp_path, dtype=torch.bfloat16, attn_implementation="eager"
    ).eval()
    bf16_inputs = {k: v.bfloat16() if v.is_floating_point() else v for k, v in tiny.inputs.items()}
    with torch.no_grad():
        expected = reference(**bf16_inputs).logits.float()
    finite = torch.isfinite(expected) & (expected > -1e30)
    # the bridge reorders a few bf16 operations: equal to bf16 rounding
    assert (logits.float() - expected)[finite].abs().max().item() < 0.05


def test_cache_options_and_moving_the_model(wrapped: Wrapped):
    name = "blocks.0.hook_resid_post"
    with torch.no_grad():
        _, full = wrapped.model.run_with_cache(wrapped.inputs, names_filter=name)
        _, last = wrapped.model.run_with_cache(
            wrapped.inputs, names_filter=name, pos_slice=-1, cache_device="cpu"
        )
    assert torch.equal(last[name].squeeze(1), full[name][:, -1])
    model = wrapped.model.to(dtype="float64")
    assert model is wrapped.model and model.dtype == torch.float64
    with torch.no_grad():
        logits64 = model(wrapped.inputs)
    wrapped.model.to(dtype="float32")
    expected = wrapped.model(wrapped.inputs)
    keep = torch.isfinite(expected) & (expected > -1e30)
    assert (logits64.float() - expected)[keep].abs().max().item() <= 1e-4


def test_activation_cache_helpers(wrapped: Wrapped):
    with torch.no_grad():
        _, cache = wrapped.model.run_with_cache(
            wrapped.inputs, names_filter=lambda n: n.endswith("hook_resid_post")
            and n.startswith("blocks.")
        )
    stacked = cache.stack_activation("resid_post")
    assert stacked.shape[0] == wrapped.model.cfg.n_layers
    for layer in range(wrapped.model.cfg.n_layers):
        assert torch.equal(stacked[layer], cache["resid_post", layer])
