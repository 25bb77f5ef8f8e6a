"""GPU checks (skipped without CUDA): parity on the GPU in fp32, bf16 forward and generation."""

from __future__ import annotations

import copy

import pytest
import torch

from hooked_vlm import HookedVLM
from hooked_vlm.testing.tiny import TINY_BUILDERS, build_tiny

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def exact_matmuls():
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = previous


def on_cuda(inputs: dict) -> dict:
    return {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


@pytest.mark.parametrize("name", sorted(TINY_BUILDERS))
def test_fp32_parity_on_gpu(name):
    tiny = build_tiny(name)
    reference = copy.deepcopy(tiny.model).cuda()
    model = HookedVLM.from_hf(tiny.model, device="cuda")
    inputs = on_cuda(tiny.inputs)
    with torch.no_grad():
        expected = reference(**inputs, output_hidden_states=True)
        logits, cache = model.run_with_cache(inputs, names_filter=lambda n: "resid_post" in n)
    keep = torch.isfinite(expected.logits) & (expected.logits > -1e30)
    assert logits.device.type == "cuda"
    assert (logits - expected.logits)[keep].abs().max().item() <= 1e-4
    for layer in range(model.cfg.n_layers - 1):  # HF's last hidden state has the final norm
        resid = cache[f"blocks.{layer}.hook_resid_post"]
        assert (resid - expected.hidden_states[layer + 1]).abs().max().item() <= 1e-4


@pytest.mark.parametrize("name", ["llava", "chameleon", "emu3"])
def test_bf16_forward_and_generation_on_gpu(name, tmp_path):
    tiny = build_tiny(name)
    tiny.model.save_pretrained(tmp_path)
    model = HookedVLM.from_pretrained(tmp_path, device="cuda", dtype="bf16")
    assert model.dtype == torch.bfloat16 and model.device.type == "cuda"
    inputs = on_cuda(tiny.inputs)
    out = model.generate(inputs, max_new_tokens=4, eos_token_id=[])
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4
    with torch.no_grad():
        logits = model(inputs)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits[..., :1]).all()


def test_device_map_split_across_gpu_and_cpu(tmp_path):
    """accelerate's dispatch (what device_map="auto" does over several GPUs): the vision tower
    on the GPU, the decoder on the CPU; logits, caching and a knockout still work."""
    from hooked_vlm.interventions import knockout

    tiny = build_tiny("llava")
    tiny.model.save_pretrained(tmp_path)
    reference = HookedVLM.from_pretrained(tmp_path, dtype="float32")
    device_map = {"model.vision_tower": 0, "model.multi_modal_projector": 0,
                  "model.language_model": "cpu", "lm_head": "cpu"}
    split = HookedVLM.from_pretrained(tmp_path, dtype="float32", device_map=device_map)
    with torch.no_grad():
        expected = reference(tiny.inputs)
        got, cache = split.run_with_cache(tiny.inputs, names_filter="blocks.1.hook_resid_post")
        layout = split.layout(tiny.inputs["input_ids"])
        gate = knockout(split, layout, "text", "image", mode="mask")
        closed = split.run_with_hooks(tiny.inputs, fwd_hooks=gate)
        closed_ref = reference.run_with_hooks(tiny.inputs, fwd_hooks=gate)
    assert (got.float().cpu() - expected).abs().max().item() <= 1e-4
    assert cache["blocks.1.hook_resid_post"].shape[0] == 2
    assert (closed.float().cpu() - closed_ref).abs().max().item() <= 1e-4
