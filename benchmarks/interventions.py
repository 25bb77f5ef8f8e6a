"""Benchmark: interventions naive vs batched vs prefix reuse, and plain forward vs HF.

A medium random LLaVA (CLIP tower -> 576 image tokens; Llama decoder d=512, 6 layers, 8 heads)
with ~20 text tokens. Times per evaluated knockout / patch / head mask, ratios against the
naive method (one full forward per item), and HookedVLM's plain forward against HF eager and
HF SDPA. Run: ``python benchmarks/interventions.py [--threads 2] [--masks 16]``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch

from hooked_vlm import HookedVLM
from hooked_vlm.interventions import (
    PrefixCache,
    evaluate_head_masks,
    knockout,
    kv_baseline,
    patch,
    patch_sweep,
)


def medium_llava(image_tokens_side: int = 24, text_after: int = 18, seed: int = 0):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig
    from transformers import LlavaForConditionalGeneration as Llava

    torch.manual_seed(seed)
    patch = 6
    vision = CLIPVisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        image_size=patch * image_tokens_side, patch_size=patch, projection_dim=64,
    )
    text = LlamaConfig(
        hidden_size=512, intermediate_size=1376, num_hidden_layers=6, num_attention_heads=8,
        num_key_value_heads=8, vocab_size=1000, max_position_embeddings=2048,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=3,
                         vision_feature_layer=-2, vision_feature_select_strategy="default")
    config._attn_implementation = "eager"
    model = Llava(config).eval()
    n_img = image_tokens_side**2
    gen = torch.Generator().manual_seed(seed)
    words = lambda n: (10 + torch.randint(0, 900, (n,), generator=gen)).tolist()  # noqa: E731
    ids = torch.tensor([[1, *words(3), *[3] * n_img, *words(text_after)]])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
              "pixel_values": torch.randn(1, 3, patch * image_tokens_side,
                                          patch * image_tokens_side, generator=gen)}
    return model, inputs


def timed(fn: Callable[[], object], repeats: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--masks", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hf, inputs = medium_llava()
    sdpa = copy.deepcopy(hf)
    sdpa.config._attn_implementation = "sdpa"
    sdpa.config.text_config._attn_implementation = "sdpa"
    eager = copy.deepcopy(hf)
    model = HookedVLM.from_hf(hf)
    layout = model.layout(**inputs)
    n_img = int(layout.mask("image").sum())
    n_text = int(layout.mask("text").sum())
    print(f"medium LLaVA: {model.cfg.n_layers} layers, d={model.cfg.d_model}, "
          f"{layout.seq_len} tokens ({n_img} image, {n_text} text), {args.threads} threads\n")
    rows: list[tuple[str, str, float, float]] = []

    def report(task: str, method: str, seconds: float, per: int, base: float | None) -> float:
        each = seconds / per
        rows.append((task, method, each * 1e3, (base / each) if base else 1.0))
        return each

    with torch.no_grad():
        hf_sdpa = timed(lambda: sdpa(**inputs))
        hf_eager = timed(lambda: eager(**inputs))
        plain = timed(lambda: model(inputs))
    print(f"plain forward: HF SDPA {hf_sdpa * 1e3:.0f} ms, HF eager {hf_eager * 1e3:.0f} ms, "
          f"HookedVLM {plain * 1e3:.0f} ms -> {plain / hf_sdpa:.2f}x HF SDPA, "
          f"{plain / hf_eager:.2f}x HF eager\n")

    # knockout: text -> image (mask), full recompute vs reused prefix
    hooks = knockout(model, layout, "text", "image_and_eoi", mode="mask")
    base = report("knockout", "naive full recompute",
                  timed(lambda: model.run_with_hooks(inputs, fwd_hooks=hooks)), 1, None)
    prefix = PrefixCache.build(model, inputs, hooks.start)
    report("knockout", "prefix reuse", timed(lambda: prefix.run(hooks)), 1, base)

    # patching sweep over every layer at the last image token (source: another image)
    source = {**inputs, "pixel_values": torch.randn_like(inputs["pixel_values"])}
    n_layers = model.cfg.n_layers

    def sweep(per_forward: int, reuse: bool) -> Callable[[], object]:
        return lambda: patch_sweep(model, inputs, source, positions="last_image",
                                   layers_per_forward=per_forward, reuse_prefix=reuse)

    base = report("patch / layer", "naive full recompute", timed(sweep(1, False), 1),
                  n_layers, None)
    report("patch / layer", f"batched ({n_layers}/forward)", timed(sweep(n_layers, False), 1),
           n_layers, base)
    report("patch / layer", "prefix reuse", timed(sweep(1, True), 1), n_layers, base)
    report("patch / layer", "batched + prefix reuse", timed(sweep(n_layers, True), 1),
           n_layers, base)
    # the sweeps above include two one-off full runs (source cache, clean prefix); marginal:
    name = f"blocks.{n_layers // 2}.hook_resid_pre"
    _, cache = model.run_with_cache(source, names_filter=name)
    one = patch(model, layout, cache, name, "last_image")
    at_image = PrefixCache.build(model, inputs, one.start)
    report("patch / layer", "prefix reuse, marginal", timed(lambda: at_image.run(one)), 1, base)

    # head masks, baseline_kv (text after image sees a mean image's keys/values)
    gen = torch.Generator().manual_seed(0)
    masks = (torch.rand(args.masks, n_layers, model.cfg.n_heads, generator=gen) > 0.3).float()
    baseline = kv_baseline(model, {**inputs, "pixel_values": torch.zeros_like(
        inputs["pixel_values"])})

    def evaluate(batch: int, reuse: bool) -> Callable[[], object]:
        return lambda: evaluate_head_masks(
            model, inputs, masks, lambda lg: lg[:, 5], "baseline_kv", batch_size=batch,
            reuse_prefix=reuse, queries="text_after_image", baseline=baseline)

    base = report("head mask", "naive full recompute", timed(evaluate(1, False), 1),
                  args.masks, None)
    report("head mask", "batched (8/forward)", timed(evaluate(8, False), 1), args.masks, base)
    report("head mask", "prefix reuse", timed(evaluate(1, True), 1), args.masks, base)
    report("head mask", "batched + prefix reuse", timed(evaluate(8, True), 1), args.masks, base)

    print(f"{'task':<15}{'method':<28}{'ms / item':>11}{'speed-up':>10}")
    for task, method, ms, ratio in rows:
        print(f"{task:<15}{method:<28}{ms:>11.1f}{ratio:>9.1f}x")


if __name__ == "__main__":
    main()
