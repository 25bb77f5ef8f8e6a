"""Benchmark: interventions naive vs batched vs prefix reuse, and plain forward vs HF.

A medium random LLaVA (benchmarks/medium.py: CLIP tower -> 576 image tokens; Llama decoder
d=512, 8 heads, 6 layers by default) with ~20 text tokens. Times per evaluated knockout /
patch / head mask, ratios against the naive method (one full forward per item), and
HookedVLM's plain forward against HF eager and HF SDPA.

    python benchmarks/interventions.py [--threads 2] [--masks 16] [--layers 6] [--device cuda]

A patching sweep pays two full runs whatever the method (the source's cache and the clean
target, which the metrics need anyway), so its per-layer speed-up is bounded by about
(layers + 2) / 2 for a sweep of one source/target pair: deeper models gain more.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hooked_vlm import HookedVLM  # noqa: E402
from hooked_vlm.interventions import (  # noqa: E402
    PrefixCache,
    evaluate_head_masks,
    knockout,
    kv_baseline,
    patch,
    patch_sweep,
    repeat_layout,
)
from medium import medium_llava  # noqa: E402
from timing import median_time  # noqa: E402

DEVICE = "cpu"


def timed(fn: Callable[[], object], repeats: int = 3) -> float:
    return median_time(fn, repeats, DEVICE)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--masks", type=int, default=16)
    parser.add_argument("--controls", type=int, default=10, help="random-key knockout repeats")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    torch.set_num_threads(args.threads)
    hf, inputs = medium_llava(text_tokens=22, n_layers=args.layers)
    hf.to(args.device)
    inputs = {k: v.to(args.device) for k, v in inputs.items()}
    sdpa = copy.deepcopy(hf)
    sdpa.set_attn_implementation("sdpa")
    eager = copy.deepcopy(hf)
    model = HookedVLM.from_hf(hf)
    layout = model.layout(**{k: v for k, v in inputs.items() if k != "pixel_values"})
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
    # the random-key control: n different random_image:10 knockouts, one per batch row
    n = args.controls
    many = repeat_layout(layout, n)
    controls = knockout(model, many, "text", "random_image:10", mode="mask", seed=1)
    repeated = {k: v.repeat_interleave(n, 0) for k, v in inputs.items()}
    report("knockout", f"batched ({n}/forward)",
           timed(lambda: model.run_with_hooks(repeated, fwd_hooks=controls)), n, base)
    control_prefix = PrefixCache.build(model, inputs, controls.start).repeated(n)
    report("knockout", "batched + prefix reuse",
           timed(lambda: control_prefix.run(controls)), n, base)

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

    print(f"{'task':<15}{'method':<28}{'ms / item':>11}{'speed-up':>10}   ({args.device})")
    for task, method, ms, ratio in rows:
        print(f"{task:<15}{method:<28}{ms:>11.1f}{ratio:>9.1f}x")


if __name__ == "__main__":
    main()
