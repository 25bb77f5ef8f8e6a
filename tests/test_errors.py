"""Bad input gets a clear error, and no hook outlives a failing call."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hooked_vlm import (
    ARCHITECTURES,
    HookedVLM,
    ImageTokenMismatchError,
    UnknownHookError,
    UnsupportedArchitectureError,
)
from tests.conftest import ALL_ARCHS, Wrapped, wrap


@pytest.fixture(scope="module")
def llava() -> Wrapped:
    return wrap("llava")


def attached_hooks(model: HookedVLM) -> int:
    return sum(len(hp._forward_hooks) for hp in model.bridge.hook_dict.values())


def test_unsupported_architecture_lists_the_supported_ones():
    config = LlamaConfig(hidden_size=16, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, vocab_size=32)
    with pytest.raises(UnsupportedArchitectureError) as err:
        HookedVLM.from_hf(LlamaForCausalLM(config))
    for name in ARCHITECTURES:
        assert name in str(err.value)


def test_unknown_hook_name_suggests_the_closest(llava: Wrapped):
    with pytest.raises(UnknownHookError, match="blocks.1.hook_resid_post"):
        llava.model.run_with_hooks(llava.inputs,
                                   fwd_hooks=[("blocks.1.hook_resid_pots", lambda x, hook: x)])
    with pytest.raises(UnknownHookError, match="blocks.0.attn.hook_pattern"):
        llava.model.run_with_cache(llava.inputs, names_filter=["blocks.0.attn.hook_patern"])
    with pytest.raises(UnknownHookError, match="matches no hook"):
        llava.model.run_with_hooks(llava.inputs, fwd_hooks=[(lambda n: "nope" in n, print)])
    assert attached_hooks(llava.model) == 0


def test_image_token_count_mismatch_is_explained(llava: Wrapped):
    ids = llava.inputs["input_ids"].clone()
    ids[:, 5] = 9  # one placeholder fewer per example than the 25 features per image
    with pytest.raises(ImageTokenMismatchError, match=r"\[24, 24\] image placeholder"):
        llava.model(input_ids=ids, pixel_values=llava.inputs["pixel_values"])


def test_input_ids_are_required_and_checked(llava: Wrapped):
    with pytest.raises(ValueError, match="no input_ids"):
        llava.model(pixel_values=llava.inputs["pixel_values"])
    with pytest.raises(ValueError, match=r"integer tensor \[batch, pos\]"):
        llava.model(input_ids=llava.inputs["input_ids"][0])


def test_no_hook_stays_attached_after_a_hook_raises(llava: Wrapped):
    def broken(x, hook):
        raise RuntimeError("boom")

    hooks = [("blocks.0.hook_resid_post", broken), ("blocks.1.attn.hook_pattern", broken)]
    with pytest.raises(RuntimeError, match="boom"):
        llava.model.run_with_hooks(llava.inputs, fwd_hooks=hooks)
    assert attached_hooks(llava.model) == 0
    with pytest.raises(RuntimeError, match="boom"), llava.model.hooks(hooks):
        llava.model(llava.inputs)
    assert attached_hooks(llava.model) == 0
    with pytest.raises(RuntimeError, match="boom"):
        llava.model.generate(llava.inputs, max_new_tokens=2, fwd_hooks=hooks)
    assert attached_hooks(llava.model) == 0
    with torch.no_grad(), llava.model.eager_attention():
        assert torch.equal(llava.model(llava.inputs), llava.reference(**llava.inputs).logits)


def test_from_pretrained_unknown_local_name_does_not_touch_the_network(tmp_path, monkeypatch):
    from hooked_vlm.loading import ModelSourceError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSourceError, match="no such directory"):
        HookedVLM.from_pretrained(str(tmp_path / "missing-model-dir"))


def test_known_checkpoints_get_their_model_config_by_hub_id_or_local_copy(tmp_path):
    from hooked_vlm.loading import resolve_source

    by_id = resolve_source("mistral-community/pixtral-12b")
    assert not by_id.local and by_id.model_config.name == "pixtral-12b"
    by_name = resolve_source("pixtral-12b")
    assert by_name.location == "mistral-community/pixtral-12b"
    local = resolve_source(tmp_path, model_config="pixtral-12b")
    assert local.local and local.model_config.special_tokens["eoi"] == "[IMG_END]"
    assert resolve_source(tmp_path).model_config is None
    assert resolve_source("someone/unknown-model").model_config is None


@pytest.mark.parametrize("name", ALL_ARCHS)
def test_one_placeholder_short_is_a_clear_error_on_every_architecture(name):
    w = wrap(name)
    ids = w.inputs["input_ids"].clone()
    image_id = w.model.architecture.special_tokens(w.model.hf_model.config).image
    first = int((ids[0] == image_id).nonzero()[0, 0])
    ids[:, first] = ids[0, -1]  # a text id where an image placeholder was
    with pytest.raises(ImageTokenMismatchError, match="image placeholder tokens"):
        w.model({**w.inputs, "input_ids": ids})
    assert attached_hooks(w.model) == 0
