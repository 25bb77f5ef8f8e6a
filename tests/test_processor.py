"""prepare(): the processor path, with the layout attached to the inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hooked_vlm import HookedVLM
from hooked_vlm.testing.processors import tiny_processor
from hooked_vlm.testing.tiny import build_tiny


def images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (40, 52, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.mark.parametrize("name", ["llava", "chameleon"])
def test_prepare_builds_inputs_and_layout(name, tmp_path):
    tiny = build_tiny(name)
    processor = tiny_processor(name)
    model = HookedVLM.from_hf(tiny.model, processor)
    inputs = model.prepare(images(2), ["w1 w2 <image> w3", "w4 <image> w5 w6 w7"],
                           processor_kwargs={"return_for_text_completion": True}
                           if name == "chameleon" else None)
    layout = inputs.layout
    assert layout.n_images() == [1, 1]
    assert [int(x.numel()) for x in layout.select("image")] == [tiny.n_image_tokens] * 2
    assert [len(t) for t in layout.select("text")] == [3, 4]
    assert not layout.mask("text")[~inputs["attention_mask"].bool()].any()
    logits = model(inputs)
    assert logits.shape[:2] == inputs["input_ids"].shape
    # round trip through a local directory keeps the processor
    build_tiny(name).model.save_pretrained(tmp_path)  # same seed, unwrapped
    processor.save_pretrained(tmp_path)
    loaded = HookedVLM.from_pretrained(tmp_path)
    assert loaded.processor is not None
    with torch.no_grad():
        assert torch.allclose(loaded(inputs), logits, atol=1e-5)


def test_prepare_without_processor_says_what_to_do():
    model = HookedVLM.from_hf(build_tiny("llava").model)
    with pytest.raises(ValueError, match="no processor"):
        model.prepare(images(1), "w1 <image>")


def test_str_tokens_show_the_image_span():
    model = HookedVLM.from_hf(build_tiny("llava").model, tiny_processor("llava"))
    inputs = model.prepare(images(1), "w1 <image> w2")
    tokens = model.to_str_tokens(inputs["input_ids"][0])
    assert tokens[:3] == ["<s>", "w1", "<image>"] and tokens[-1] == "w2"
    assert tokens.count("<image>") == int(inputs.layout.mask("image").sum())


def test_prepare_fills_the_model_configs_prompt_template(tmp_path):
    build_tiny("llava").model.save_pretrained(tmp_path)
    tiny_processor("llava").save_pretrained(tmp_path)
    model = HookedVLM.from_pretrained(tmp_path, model_config="llava-1.5-7b", dtype="float32")
    assert model.model_config.name == "llava-1.5-7b"
    inputs = model.prepare(images(2), task="caption")
    template = model.model_config.prompt("caption")
    assert "<image>" in template
    tokens = model.to_str_tokens(inputs["input_ids"][0])
    assert "USER:" in tokens and "ASSISTANT:" in tokens  # the template's words, tokenized
    assert inputs.layout.n_images() == [1, 1]
    with pytest.raises(KeyError, match="has no 'describe' prompt"):
        model.prepare(images(1), task="describe")
