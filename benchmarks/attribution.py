"""Benchmark: head-attribution masks per second, naive vs batched vs batched + prefix reuse.

A medium random LLaVA (benchmarks/medium.py: CLIP tower -> 576 image tokens; Llama decoder
d=512, 8 heads, 6 layers by default) with ~20 text tokens; the default ablation (mode
"baseline_kv", dataset-mean baseline, text queries after the image; ``--mode`` for another),
alpha 0.5. Every method
runs the attribution path itself (``Evaluator.evaluate``) on the same masks:

- naive: one full forward (vision tower included) per mask;
- batched: ``--batch`` masks per full forward;
- batched + prefix reuse: ``--batch`` masks per forward over the text suffix only, on the
  example's clean image prefix (built once per example: its one-off cost is shown apart, and
  amortised over ``--masks-per-example``);
- for comparison, benchmarks/interventions.py's setting: ``evaluate_head_masks`` on 16 masks,
  8 per forward, building the prefix inside the call (what a caller that does not keep the
  prefix pays).

Methods are timed in interleaved rounds (a shared machine's load hits each alike); the table
gives medians over rounds of the wall time and of the process's CPU time (the steadier measure
on a shared machine: time spent waiting for a core is not counted).

    python benchmarks/attribution.py [--threads 2] [--batch 32] [--rounds 3] [--layers 6]
                                     [--masks-per-example 4096] [--mode knockout] [--device cuda]
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hooked_vlm.attribution import AttributionConfig, Evaluator, Example, RandomMasks  # noqa: E402
from hooked_vlm.interventions import evaluate_head_masks  # noqa: E402
from hooked_vlm.interventions.ablation import ABLATION_MODES  # noqa: E402
from medium import attribution_arguments, hooked_medium_llava  # noqa: E402
from timing import interleaved_rounds, time_once  # noqa: E402


def main() -> None:
    args = attribution_arguments(masks_per_example=4096, modes=ABLATION_MODES)
    model, inputs = hooked_medium_llava(args)
    examples = [Example(inputs, answer=5)]
    layout = model.layout(**inputs)
    n_img, n_text = int(layout.mask("image").sum()), int(layout.mask("text").sum())
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    masks = RandomMasks(n_layers, n_heads, args.batch, alpha=0.5).masks(0, args.batch)
    print(f"medium LLaVA: {n_layers} layers x {n_heads} heads, d={model.cfg.d_model}, "
          f"{layout.seq_len} tokens ({n_img} image, {n_text} text), {args.threads} threads, "
          f"{args.device}; mode {args.mode} (mean baseline / mean output), alpha 0.5\n")

    def evaluator(batch: int, reuse: bool) -> Evaluator:
        config = AttributionConfig(batch_size=batch, reuse_prefix=reuse, mode=args.mode)
        ev = Evaluator(model, examples, config)
        ev.evaluate(0, masks[:1])  # builds the example's state (baseline, prefix); warms up
        return ev

    naive, batched, fast = evaluator(1, False), evaluator(args.batch, False), evaluator(
        args.batch, True)
    ablation = fast._ablation_inputs(inputs, layout)
    sixteen = torch.as_tensor(np.resize(masks, (16, n_layers, n_heads)), dtype=model.dtype)

    def interventions_setting() -> object:
        return evaluate_head_masks(model, inputs, sixteen, lambda lg: lg[:, 5], args.mode,
                                   batch_size=8, queries="text_after_image", **ablation)

    methods: dict[str, tuple[Callable[[], object], int]] = {
        "naive (1 mask / full forward)": (lambda: naive.evaluate(0, masks[:1]), 1),
        f"batched ({args.batch} / full forward)": (lambda: batched.evaluate(0, masks),
                                                    args.batch),
        f"batched + prefix reuse ({args.batch})": (lambda: fast.evaluate(0, masks), args.batch),
        "evaluate_head_masks, 16 masks, 8/forward": (interventions_setting, 16),
    }

    def rebuild() -> float:
        fast._state = None  # the one-off per example: clean prefix (and state) again
        return time_once(lambda: fast.layout(0), args.device)

    wall, cpu, builds = interleaved_rounds(methods, args.rounds, args.device, rebuild)
    n, build = args.masks_per_example, statistics.median(builds)
    fast_name = f"batched + prefix reuse ({args.batch})"
    amortised = f"  same, prefix build amortised / {n} masks"
    wall[amortised] = [s + build / n for s in wall[fast_name]]
    cpu[amortised] = [s + build / n for s in cpu[fast_name]]  # (build: wall time)
    naive_name = "naive (1 mask / full forward)"
    base_wall, base_cpu = (statistics.median(d[naive_name]) for d in (wall, cpu))
    print(f"{'method':<44}{'wall ms/mask':>13}{'vs naive':>9}{'CPU ms/mask':>13}{'vs naive':>9}")
    for name in wall:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"{name:<44}{w * 1e3:>13.1f}{base_wall / w:>8.1f}x{c * 1e3:>13.1f}"
              f"{base_cpu / c:>8.1f}x")
    print(f"\nmedians of {args.rounds} interleaved rounds; CPU = this process's CPU time (all "
          f"threads). One-off per example (clean prefix + state): {build * 1e3:.0f} ms wall.")


if __name__ == "__main__":
    main()
