"""Shared fixtures: tiny random VLMs, each with an untouched HF reference copy."""

from __future__ import annotations

import copy
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
import torch

from hooked_vlm import HookedVLM
from hooked_vlm.testing.tiny import TinyModel, build_tiny

# One thread: tiny models gain nothing from more, and OpenMP threads spinning on a busy
# 2-core machine made each forward ~30x slower.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")  # and in the subprocesses tests start

CORE_ARCHS = ["llava", "chameleon", "chameleon-swin", "emu3"]
# Encoder-based families of issue 4: every one runs the parity, hook-edit and generation tests.
MORE_ARCHS = [
    "pixtral", "mistral3", "llava_next", "llava_onevision", "janus", "qwen2_vl", "internvl",
    "idefics3",
]
# The families of issue 18: windowed and DeepStack Qwen towers, bidirectional image blocks
# (Gemma 3, Molmo 2), a bidirectional prefix (PaliGemma 2), SmolVLM.
NEW_ARCHS = ["qwen2_5_vl", "qwen3_vl", "gemma3", "paligemma", "smolvlm", "molmo2"]
ALL_ARCHS = CORE_ARCHS + MORE_ARCHS + NEW_ARCHS
# (the new families' generation is compared with HF's under pattern hooks: test_families.py)
GENERATE_ARCHS = ["llava", "chameleon", "emu3", *MORE_ARCHS]


@dataclass
class Wrapped:
    """A HookedVLM over a tiny model, and a deep copy of the HF model before wrapping."""

    tiny: TinyModel
    model: HookedVLM
    reference: torch.nn.Module

    @property
    def inputs(self) -> dict[str, torch.Tensor]:
        return self.tiny.inputs


def wrap(name: str, **kwargs) -> Wrapped:
    tiny = build_tiny(name, **kwargs)
    reference = copy.deepcopy(tiny.model)
    return Wrapped(tiny, HookedVLM.from_hf(tiny.model), reference)


@pytest.fixture(scope="module", params=ALL_ARCHS)
def wrapped(request) -> Wrapped:
    return wrap(request.param)


def same_text_two_images(name: str, **kwargs) -> tuple[HookedVLM, dict, object]:
    """A tiny model, inputs whose two examples share their text but not their image, layout."""
    tiny = build_tiny(name, **kwargs)
    model = HookedVLM.from_hf(tiny.model)
    inputs = dict(tiny.inputs)
    inputs["input_ids"] = inputs["input_ids"][:1].repeat(2, 1)
    return model, inputs, model.layout(**inputs)


def image_dependent(layout) -> torch.Tensor:
    """Positions that carry image information before any text query reads it, ``[batch, pos]``:
    ``image_and_eoi``, plus the non-text members of a bidirectional attention block holding an
    image position (Molmo 2's BOI, PaliGemma's BOS after the image); for causal families just
    ``image_and_eoi``."""
    image = layout.mask("image_and_eoi")
    blocks = layout.attention_blocks
    if blocks is None:
        return image
    out = image.clone()
    for b in range(image.shape[0]):
        with_image = blocks[b][image[b] & (blocks[b] >= 0)].unique()
        out[b] |= torch.isin(blocks[b], with_image) & ~layout.mask("text")[b]
    return out


def first_image_dependent(layout) -> int:
    """The first position whose state can depend on the pixels, over the batch: the first
    image position, or the start of a bidirectional block holding one."""
    reach = layout.mask("image_and_eoi").clone()
    if layout.attention_blocks is not None:
        blocks = layout.attention_blocks
        for b in range(reach.shape[0]):
            reach[b] |= torch.isin(blocks[b], blocks[b][reach[b] & (blocks[b] >= 0)])
    return int(reach.any(0).nonzero()[0])


def generate_by_recompute(model: HookedVLM, inputs: dict, hooks: list, n: int) -> torch.Tensor:
    """Greedy decoding that reruns the whole sequence (no KV cache) with ``hooks`` each step."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    static = {k: v for k, v in inputs.items() if k != "mm_token_type_ids"}  # re-derived
    with torch.no_grad():
        for _ in range(n):
            step = {**static, "input_ids": ids, "attention_mask": mask}
            nxt = model.run_with_hooks(step, fwd_hooks=hooks)[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], 1)
            mask = torch.cat([mask, torch.ones_like(nxt)], 1)
    return ids



def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` imported as a module (scripts/ is not a package)."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the session (tests/browser.py). Skips when chromium is not
    installed, unless $HOOKED_VLM_REQUIRE_CHROMIUM is set (CI: .ci/run installs it)."""
    from tests.browser import REQUIRE_ENV, Browser, find_chromium

    if find_chromium() is None:
        reason = "chromium is not installed (apt-get install -y chromium): HTML pages unchecked"
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"{reason}, and ${REQUIRE_ENV} requires it")
        pytest.skip(reason)
    with Browser.launch() as running:
        yield running
