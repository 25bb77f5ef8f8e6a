"""The family registry and what the families of issue 18 add: videos as frames, bidirectional
attention kept exactly, DeepStack injections, and layouts that follow the processors' own tokens.

Image parity, hook edits, interventions and plain generation of the new families run with
every family (tests/conftest.py: ALL_ARCHS).
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformer_lens.factories.architecture_adapter_factory import ArchitectureAdapterFactory
from transformer_lens.model_bridge.generalized_components import (
    PositionEmbeddingsAttentionBridge,
)

from hooked_vlm import HookedVLM, LayoutError
from hooked_vlm.families import ARCHITECTURES, TINY_BUILDERS, build_tiny
from hooked_vlm.interventions import PrefixCache, knockout
from hooked_vlm.layout import patch_grid, patch_grids
from hooked_vlm.model_configs import list_model_configs, load_model_config
from hooked_vlm.testing.processors import tiny_processor
from tests.conftest import NEW_ARCHS, Wrapped, image_dependent, wrap
from tests.test_parity import TOL, finite_max_diff, hf_layer_outputs

VIDEOS = ["qwen2_vl_video", "qwen2_5_vl_video", "qwen3_vl_video", "smolvlm_video"]
SRC = Path(__file__).resolve().parents[1] / "src" / "hooked_vlm"


def layout_of(w: Wrapped):
    frames = w.tiny.extras.get("video_frames")
    return w.model.layout(**w.inputs, **({"video_frames": frames} if frames else {}))


# ------------------------------------------------------------------------------ the registry
def test_one_module_per_family_in_one_registry():
    configs = {load_model_config(n).architecture: load_model_config(n) for n in
               list_model_configs()}
    for hf_class, arch in ARCHITECTURES.items():
        module = importlib.import_module(next(iter(arch.tiny.values())).__module__)
        assert module.__name__.startswith("hooked_vlm.families."), hf_class
        assert module.FAMILY is arch, hf_class
        assert arch.family and arch.gate and arch.tiny, hf_class
        for key, adapter in arch.adapters.items():  # registered with TransformerLens
            assert ArchitectureAdapterFactory._adapters[key] is adapter, key
        assert hf_class in configs, f"{hf_class} has no model_configs/*.yaml"
        hf_id = configs[hf_class].hf_id
        assert hf_id is None or re.fullmatch(r"[\w.-]+/[\w.-]+", hf_id), hf_id
    assert len(TINY_BUILDERS) == sum(len(a.tiny) for a in ARCHITECTURES.values())


def test_production_code_does_not_import_the_testing_package():
    for path in SRC.rglob("*.py"):
        if "testing" in path.parts:
            continue
        assert not re.search(r"^\s*(from|import) hooked_vlm\.testing", path.read_text(),
                             re.MULTILINE), path


# ------------------------------------------------------------------------------ videos
@pytest.fixture(scope="module", params=VIDEOS)
def video(request) -> Wrapped:
    return wrap(request.param)


def test_videos_match_hf_and_generate_as_hf(video: Wrapped):
    """Logits, every decoder residual and pattern equal HF's; greedy KV-cached generation with
    pattern hooks on every layer (the recomputed path at every step) equals HF's generate."""
    hf_logits, hf_resid, hf_patterns = hf_layer_outputs(video)
    with torch.no_grad():
        logits, cache = video.model.run_with_cache(
            video.inputs, names_filter=lambda n: n.startswith("blocks.")
            and n.endswith(("hook_resid_post", "attn.hook_pattern")))
    assert finite_max_diff(logits, hf_logits) <= TOL
    for layer in range(video.model.cfg.n_layers):
        assert (cache[f"blocks.{layer}.hook_resid_post"] - hf_resid[layer]).abs().max() <= TOL
        assert (cache[f"blocks.{layer}.attn.hook_pattern"] - hf_patterns[layer]).abs().max() \
            <= TOL
    video.reference.generation_config.eos_token_id = None
    with torch.no_grad():
        expected = video.reference.generate(**video.inputs, max_new_tokens=4, do_sample=False)
    seen = []
    watch = [(lambda n: n.endswith("attn.hook_pattern") and n.startswith("blocks."),
              lambda p, hook: seen.append(p.shape[-2]))]
    got = video.model.generate(video.inputs, max_new_tokens=4, eos_token_id=[], fwd_hooks=watch)
    assert torch.equal(got, expected)
    assert seen.count(1) == 3 * video.model.cfg.n_layers  # the hooks ran at every step


@pytest.mark.parametrize("name", NEW_ARCHS)
def test_kv_cached_generation_with_pattern_hooks_equals_hf_generate(name):
    """Pattern hooks on every layer put each decode step on the recomputed path (with HF's
    mask: bidirectional blocks on the prompt, causal after it); greedy output equals HF's."""
    w = wrap(name)
    w.reference.generation_config.eos_token_id = None
    with torch.no_grad():
        expected = w.reference.generate(**w.inputs, max_new_tokens=4, do_sample=False)
    steps = []
    watch = [("blocks.0.attn.hook_pattern", lambda p, hook: steps.append(p.shape[-2])),
             (lambda n: n.startswith("blocks.") and n.endswith("attn.hook_pattern"),
              lambda p, hook: None)]
    got = w.model.generate(w.inputs, max_new_tokens=4, eos_token_id=[], fwd_hooks=watch)
    assert torch.equal(got, expected)
    assert steps[1:] == [1, 1, 1]


def test_frames_are_image_spans_with_a_frame_index(video: Wrapped):
    layout = layout_of(video)
    x = video.tiny.extras
    for b, frames in enumerate(x["frame_spans"]):
        spans = [s for s in layout.spans[b] if s.frame is not None]
        assert [s.frame for s in spans] == list(range(len(frames)))
        got = [(min(s.positions), max(s.positions) + 1) for s in spans]
        assert got == frames
        for k, (start, stop) in enumerate(frames):
            image = layout.select("image", frame=k)[b]
            assert start <= int(image.min()) and int(image.max()) < stop
            if "video_grids" in x:  # Qwen-VL: the frame's grid from video_grid_thw
                i = layout.spans[b].index(spans[k])
                assert patch_grid(layout, b, i, **video.inputs).shape == x["video_grids"][b]
    assert layout.frames() == [len(f) for f in x["frame_spans"]]
    if video.tiny.name in ("qwen2_vl_video", "qwen2_5_vl_video"):  # one EOI per video
        assert len(layout.select("eoi", frame=1)[0]) == 1
        with pytest.raises(LayoutError, match="frame 0 of example.*no 'eoi'"):
            layout.select("eoi", frame=0)
    if video.tiny.name == "qwen3_vl_video":  # one EOI per frame
        assert all(len(p) == 1 for k in range(2) for p in layout.select("eoi", frame=k))
    with pytest.raises(LayoutError, match="frame 5 does not exist"):
        layout.select("image", frame=5)
    with pytest.raises(LayoutError, match="has no frames"):
        layout.select("text", frame=0)


def _perturbed_frame(w: Wrapped, k: int) -> dict:
    """The inputs with frame ``k``'s pixels (of every video) replaced by noise."""
    noisy, gen = dict(w.inputs), torch.Generator().manual_seed(k)
    if "pixel_values_videos" in w.inputs:
        pixels, start = w.inputs["pixel_values_videos"].clone(), 0
        for t, h, wd in w.inputs["video_grid_thw"].tolist():
            rows = slice(start + k * h * wd, start + (k + 1) * h * wd)
            pixels[rows] = torch.randn(pixels[rows].shape, generator=gen)
            start += t * h * wd
        noisy["pixel_values_videos"] = pixels
    else:  # SmolVLM: frames are the images of pixel_values
        pixels = w.inputs["pixel_values"].clone()
        pixels[:, k] = torch.randn(pixels[:, k].shape, generator=gen)
        noisy["pixel_values"] = pixels
    return noisy


def test_knocking_out_a_frame_hides_that_frame_only(video: Wrapped):
    """Text cut from the last frame (every layer, "mask") reads nothing of its pixels, and
    still reads the other frames."""
    layout = layout_of(video)
    last = layout.frames()[0] - 1
    after = layout.mask("text") & (torch.arange(layout.seq_len) > layout.select(
        "last_image", frame=last)[0].max())
    cut = knockout(video.model, layout, "text", f"image_and_eoi@frame={last}", mode="mask")
    with torch.no_grad():
        clean = video.model.run_with_hooks(video.inputs, fwd_hooks=cut)[after]
        hidden = video.model.run_with_hooks(_perturbed_frame(video, last), fwd_hooks=cut)[after]
        other = video.model.run_with_hooks(_perturbed_frame(video, 0), fwd_hooks=cut)[after]
    assert (clean - hidden).abs().max().item() <= 1e-5
    assert (clean - other).abs().max().item() > 1e-4


# ------------------------------------------------------------------------------ bidirectional
@pytest.mark.parametrize("name", ["gemma3", "paligemma", "molmo2"])
def test_text_to_image_knockout_keeps_hfs_bidirectional_image_attention(name, monkeypatch):
    """Cutting every text -> image edge changes HF's mask at those edges only: the
    bidirectional block (image <-> image, PaliGemma's image <-> prompt) stays as HF builds it.
    Fast path (SDPA, nothing recomputed): the mask each layer receives, before and after the
    cut; where the image's block holds no text (Gemma 3, Molmo 2), the image positions' residuals
    equal HF's, and differ from HF's causal run. Recomputed path ("mask" and "zero"): the
    image queries' patterns equal HF's where their inputs are untouched."""
    w = wrap(name)
    layout = w.model.layout(**w.inputs)
    keys = image_dependent(layout)
    text = layout.mask("text")
    _, hf_resid, hf_patterns = hf_layer_outputs(w)
    types = {k: v for k, v in w.inputs.items() if not k.endswith("token_type_ids")}
    causal = Wrapped(dataclasses.replace(w.tiny, inputs=types), w.model, w.reference)
    _, causal_resid, _ = hf_layer_outputs(causal)  # HF without the token types: causal
    first_image = int(layout.select("first_image")[0][0])
    last_image = int(layout.select("last_image")[0][0])
    assert hf_patterns[-1][0, :, first_image, last_image].min() > 0  # image attends ahead
    recomputed = []
    monkeypatch.setattr(PositionEmbeddingsAttentionBridge, "forward", _counting(recomputed))
    masks: dict[str, list] = {"before": [], "after": []}
    point = lambda n: n.startswith("blocks.") and n.endswith("attn.hook_attn_mask")  # noqa: E731
    cut = knockout(w.model, layout, "text", keys, mode="mask")
    watch = [(point, lambda m, hook: masks["before"].append(m.clone())), *cut,
             (point, lambda m, hook: masks["after"].append(m.clone()))]
    with torch.no_grad():
        cache = _cached(w.model, w.inputs, watch, "hook_resid_post")
    assert recomputed == []  # the fast path: SDPA with HF's mask plus the knockout
    edges = (text[:, :, None] & keys[:, None, :])[:, None]
    blocked = torch.finfo(torch.float32).min
    for before, after in zip(masks["before"], masks["after"], strict=True):
        before = before.expand_as(after)
        assert torch.equal(after.masked_fill(edges, 0), before.masked_fill(edges, 0))
        assert bool((after[edges.expand_as(after)] <= blocked).all())
        assert bool((before[:, :, first_image, last_image] == 0).all())  # ahead, allowed
    image_first = not bool((text & (layout.attention_blocks >= 0)).any())  # no text in blocks
    rows = keys & ~text
    for layer in range(w.model.cfg.n_layers):
        got = cache[f"blocks.{layer}.hook_resid_post"][rows]
        if image_first:
            assert (got - hf_resid[layer][rows]).abs().max().item() <= 1e-5
        assert (got - causal_resid[layer][rows]).abs().max().item() > 1e-4
    for mode in ("mask", "zero"):
        cut = knockout(w.model, layout, "text", keys, mode=mode)
        with torch.no_grad():
            cache = _cached(w.model, w.inputs, cut, "attn.hook_pattern")
        for layer in range(w.model.cfg.n_layers if image_first else 1):
            got = cache[f"blocks.{layer}.attn.hook_pattern"].transpose(1, 2)[rows]
            want = hf_patterns[layer].transpose(1, 2)[rows]
            assert (got - want).abs().max().item() <= 1e-6, (mode, layer)


def _counting(calls: list) -> object:
    original = PositionEmbeddingsAttentionBridge.forward

    def forward(self, *args, **kwargs):
        calls.append(self.name)
        return original(self, *args, **kwargs)

    return forward


def _cached(model: HookedVLM, inputs: dict, hooks: list, suffix: str):
    store = {}

    def keep(tensor, hook):
        store[f"blocks.{hook.layer()}.{suffix}"] = tensor.detach().clone()

    watch = [(lambda n: n.startswith("blocks.") and n.endswith(suffix), keep)]
    model.run_with_hooks(inputs, fwd_hooks=[*hooks, *watch])
    return store


def test_paligemma_reuses_the_prefix_for_the_suffix_and_recomputes_inside_it():
    w = wrap("paligemma")
    layout = w.model.layout(**w.inputs)
    prefix_end = w.tiny.extras["prefix"]
    assert torch.equal(layout.attention_blocks[0, :prefix_end], torch.zeros(prefix_end).long())
    suffix = torch.zeros_like(layout.mask("text"))
    suffix[:, prefix_end:] = True
    with torch.no_grad():
        for queries, reused in ((suffix, True), ("text", False)):
            hooks = knockout(w.model, layout, queries, "image", mode="zero")
            full = w.model.run_with_hooks(w.inputs, fwd_hooks=hooks)
            start = max(hooks.start, 3)
            if reused:
                assert hooks.start == prefix_end
                prefix = PrefixCache.build(w.model, w.inputs, start)
            else:
                assert hooks.start == 0  # the prompt's queries reach the whole prefix
                with pytest.warns(UserWarning, match="bidirectional attention block"):
                    prefix = PrefixCache.build(w.model, w.inputs, start)
            assert (prefix.past is not None) == reused
            assert (prefix.run(hooks) - full[:, start:]).abs().max().item() <= 1e-5


# ------------------------------------------------------------------------------ DeepStack
def test_deepstack_injections_are_named_hooked_and_editable():
    w = wrap("qwen3_vl")
    layout = w.model.layout(**w.inputs)
    names = [i.hook for i in layout.injections]
    assert names == ["blocks.0.hook_deepstack", "blocks.1.hook_deepstack"]
    with torch.no_grad():
        clean, cache = w.model.run_with_cache(w.inputs, names_filter=lambda n: n in {
            *names, "blocks.0.hook_resid_post", "blocks.1.hook_resid_pre"})
    added = cache["blocks.0.hook_deepstack"]
    assert torch.equal(added.abs().amax(-1) > 0, layout.mask("image_patches"))
    step = cache["blocks.1.hook_resid_pre"] - cache["blocks.0.hook_resid_post"]
    assert (step - added).abs().max().item() <= 1e-6
    with torch.no_grad():
        removed = w.model.run_with_hooks(
            w.inputs, fwd_hooks=[(names[0], lambda x, hook: torch.zeros_like(x))])
    first = int(layout.select("first_image")[0].min())
    assert (removed - clean)[:, :first].abs().max().item() == 0
    assert (removed - clean).abs().max().item() > 1e-4


def test_the_flow_analysis_names_the_injections():
    from hooked_vlm.analysis import (
        flow_contributions,
        flow_masks,
        image_key_values,
        injected_layers,
        key_categories,
        text_to_image_mass,
    )

    w = wrap("qwen3_vl")
    layout = w.model.layout(**w.inputs)
    one = w.model.layout(**w.tiny.example(0))
    queries, keys = flow_masks(one)
    masses = {}

    def reduce(pattern, hook):
        masses[hook.layer()] = image_key_values(text_to_image_mass(pattern, queries, keys), keys)

    with torch.no_grad():
        w.model.run_with_hooks(w.tiny.example(0), fwd_hooks=[(
            lambda n: n.startswith("blocks.") and n.endswith("hook_pattern"), reduce)])
    per_key = torch.stack([masses[layer].sum(0) for layer in sorted(masses)])
    flow = flow_contributions(per_key, *key_categories(one), injections=layout.injections)
    assert flow.injected_after == (0, 1) == injected_layers(layout.injections)
    assert flow_contributions(per_key, *key_categories(one)).injected_after == ()


# ------------------------------------------------------------------------------ processors
def _image(h: int, w: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


PROMPTS = {
    "qwen2_5_vl": "w1 <|vision_start|><|image_pad|><|vision_end|> w2 w3",
    "qwen3_vl": "w1 <|vision_start|><|image_pad|><|vision_end|> w2 w3",
    "gemma3": "w1 <start_of_image> w2 w3",
    "paligemma": "<image>w1 w2 w3",
}


@pytest.mark.parametrize("name", list(PROMPTS))
def test_layout_and_patch_grid_follow_the_processors_tokens(name):
    """The processor's own placeholder counts and grid sizes, for two pictures of different
    shapes; the model runs on the processor's output exactly as HF does."""
    tiny = build_tiny(name)
    reference = build_tiny(name).model
    processor = tiny_processor(name)
    model = HookedVLM.from_hf(tiny.model, processor)
    pictures = [_image(24, 40, 0), _image(20, 20, 1)]
    inputs = model.prepare(pictures, [PROMPTS[name], PROMPTS[name].replace("w3", "w4 w5")])
    layout, ids = inputs.layout, inputs["input_ids"]
    image_id = model.architecture.tokens(model.hf_model.config).image
    for b in range(2):
        (span,) = layout.spans[b]
        placeholders = int((ids[b] == image_id).sum())
        grid = patch_grid(layout, b, **inputs)
        if "image_grid_thw" in inputs:
            _, h, w = inputs["image_grid_thw"][b].tolist()
            assert placeholders == h * w // 4 and grid.shape == (h // 2, w // 2)
        else:
            side = 3 if name == "gemma3" else 4
            assert placeholders == side * side and grid.shape == (side, side)
        assert torch.equal(grid.positions.flatten(), (ids[b] == image_id).nonzero().flatten())
    with torch.no_grad():
        expected = reference(**inputs).logits
        got = model(inputs)
    keep = inputs["attention_mask"].bool()
    assert (got - expected)[keep].abs().max().item() <= TOL


def test_smolvlm_layout_follows_the_processors_image_strings():
    """SmolVLM's processor needs num2words (not installed), so its prompt strings come from
    its module's own builder and the tiles from its image processor."""
    from transformers.models.smolvlm.image_processing_pil_smolvlm import (
        SmolVLMImageProcessorPil,
    )
    from transformers.models.smolvlm.processing_smolvlm import get_image_prompt_string

    from hooked_vlm.families.tokenizers import word_tokenizer
    from hooked_vlm.testing.processors import _words

    tiles = [f"<row_{r}_col_{c}>" for r in (1, 2) for c in (1, 2)]
    specials = ["<image>", "<fake_token_around_image>", "<global-img>", "\n", *tiles]
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{t: 3 + i for i, t in enumerate(specials)},
             **_words(11)}
    tokenizer = word_tokenizer(vocab, specials)
    image_processor = SmolVLMImageProcessorPil(
        do_image_splitting=True, size={"longest_edge": 32}, max_image_size={"longest_edge": 16})
    pictures = [[_image(24, 40, 0)], [_image(16, 16, 1)]]
    images = image_processor(pictures, return_tensors="pt", return_row_col_info=True)
    prompts = [
        "w1 " + get_image_prompt_string(rows[0], cols[0], 4, "<fake_token_around_image>",
                                        "<image>", "<global-img>") + " w2"
        for rows, cols in zip(images["rows"], images["cols"], strict=True)
    ]
    ids = tokenizer(prompts, return_tensors="pt", padding=True)
    inputs = {**ids, "pixel_values": images["pixel_values"],
              "pixel_attention_mask": images["pixel_attention_mask"]}
    tiny = build_tiny("smolvlm")
    reference = build_tiny("smolvlm").model
    model = HookedVLM.from_hf(tiny.model)
    layout = model.layout(**inputs)
    for b, (rows, cols) in enumerate(zip(images["rows"], images["cols"], strict=True)):
        views = patch_grids(layout, b, **inputs)
        if rows[0] * cols[0] > 1:
            assert views["tiles"].tiles == (rows[0], cols[0])
            assert views["tiles"].shape == (2 * rows[0], 2 * cols[0])
        assert next(reversed(views.values())).shape == (2, 2)  # the global image
    with torch.no_grad():
        expected = reference(**inputs).logits
        got = model(inputs)
    keep = inputs["attention_mask"].bool()
    assert (got - expected)[keep].abs().max().item() <= TOL


def test_molmo2_image_tokens_are_the_processors_own():
    """Molmo 2's image processor needs torchvision; its processor still spells each image's
    tokens from image_grids, and those are the tiny model's blocks."""
    tiny = build_tiny("molmo2")
    processor = tiny_processor("molmo2")
    model = HookedVLM.from_hf(tiny.model)
    layout = model.layout(**tiny.inputs)
    for b, grid in enumerate(tiny.extras["grids"]):
        text = processor.replace_image_token({"image_grids": [list(grid)]}, 0)
        want = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
        start, stop = tiny.extras["image_spans"][b]
        assert tiny.inputs["input_ids"][b, start:stop].tolist() == want
        views = patch_grids(layout, b, **tiny.inputs)
        assert views["low_res"].shape == grid[:2] and views["high_res"].shape == grid[2:]
