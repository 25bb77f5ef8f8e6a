"""Benchmark: head-attribution masks per second, naive vs batched vs batched + prefix reuse.

A medium random LLaVA (benchmarks/medium.py: CLIP tower -> 576 image tokens; Llama decoder
d=512, 8 heads, 6 layers by default) with ~20 text tokens; the default ablation (mode
"baseline_kv", dataset-mean baseline, text queries after the image). Every method runs the
attribution path itself (``Evaluator.evaluate``) on the same masks:

- naive: one full forward (vision tower included) per mask;
- batched: ``--batch`` masks per full forward;
- batched + prefix reuse: ``--batch`` masks per forward over the text suffix only, on the
  example's clean image prefix (built once per example; its one-off cost is shown apart and
  amortised over ``--masks-per-example``).

    python benchmarks/attribution.py [--threads 2] [--masks 64] [--batch 32] [--layers 6]
                                     [--masks-per-example 4096] [--device cuda]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hooked_vlm import HookedVLM  # noqa: E402
from hooked_vlm.attribution import AttributionConfig, Evaluator, Example, RandomMasks  # noqa: E402
from medium import medium_llava  # noqa: E402


def masks_per_second(evaluator: Evaluator, masks: np.ndarray, device: str) -> float:
    """Best of two timed runs, after the example's state (prefix, baseline) is built."""
    evaluator.evaluate(0, masks[:1])  # builds the example state, warms up
    best = float("inf")
    for _ in range(2):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        evaluator.evaluate(0, masks)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return len(masks) / best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--masks", type=int, default=64, help="masks timed per method")
    parser.add_argument("--naive-masks", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--text", type=int, default=22)
    parser.add_argument("--masks-per-example", type=int, default=4096)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hf, inputs = medium_llava(text_tokens=args.text, n_layers=args.layers)
    model = HookedVLM.from_hf(hf.to(args.device))
    inputs = {k: v.to(args.device) for k, v in inputs.items()}
    examples = [Example(inputs, answer=5)]
    layout = model.layout(**inputs)
    n_img, n_text = int(layout.mask("image").sum()), int(layout.mask("text").sum())
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    masks = RandomMasks(n_layers, n_heads, args.masks, alpha=0.5).masks(0, args.masks)
    print(f"medium LLaVA: {n_layers} layers x {n_heads} heads, d={model.cfg.d_model}, "
          f"{layout.seq_len} tokens ({n_img} image, {n_text} text), {args.threads} threads, "
          f"{args.device}; mode baseline_kv (mean baseline), alpha 0.5\n")

    def evaluator(batch: int, reuse: bool) -> Evaluator:
        return Evaluator(model, examples, AttributionConfig(batch_size=batch, reuse_prefix=reuse))

    naive = masks_per_second(evaluator(1, False), masks[: args.naive_masks], args.device)
    rows = [("naive (1 mask / full forward)", naive)]
    rows.append((f"batched ({args.batch} / full forward)",  # one forward's worth: it is slow
                 masks_per_second(evaluator(args.batch, False), masks[: args.batch],
                                  args.device)))
    fast = evaluator(args.batch, True)
    rate = masks_per_second(fast, masks, args.device)
    rows.append((f"batched + prefix reuse ({args.batch})", rate))
    start = time.perf_counter()
    fast._state = None
    fast.layout(0)  # the one-off per example: clean prefix (and baseline) built again
    build = time.perf_counter() - start
    n = args.masks_per_example
    rows.append((f"  same, prefix build amortised / {n}", n / (n / rate + build)))
    print(f"{'method':<42}{'masks/s':>10}{'ms/mask':>10}{'vs naive':>10}")
    for name, r in rows:
        print(f"{name:<42}{r:>10.1f}{1e3 / r:>10.2f}{r / naive:>9.1f}x")
    print(f"\none-off per example (clean prefix + state): {build * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
