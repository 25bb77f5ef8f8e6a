"""Benchmark: attribution patching (AtP) examples per second against the regression's masks
per second, side by side in one run, and AtP's cost per example in forward-equivalents.

A medium random LLaVA (benchmarks/medium.py: CLIP tower -> 576 image tokens; Llama decoder
d=512, 8 heads, 6 layers by default) with ~22 text tokens; the ablation of the study's default
(mode "baseline_kv", text queries after the image, ``--mode`` for another). Timed, in
interleaved rounds (a shared machine's load hits each alike), medians over rounds:

- forward: one plain forward of the example (``model(inputs)``, no hooks): the unit;
- baseline forward: the baseline keys/values of the example (``kv_baseline``: what the
  dataset-mean baseline costs per example, or a blank image's);
- AtP: ``atp_example`` (the clean forward recording attention rows, the backward to every
  ``hook_z``, the estimates) without the AtP* correction (``recompute=0``), and with it for
  every head (the default);
- regression: ``Evaluator.evaluate`` on ``--batch`` random masks per forward on the reused
  prefix (its fastest path; the prefix build is shown apart and amortised over
  ``--masks-per-example``).

    python benchmarks/atp.py [--threads 2] [--layers 6] [--rounds 3] [--batch 32]
                             [--masks-per-example 2000] [--mode knockout] [--device cuda]
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hooked_vlm.attribution import (  # noqa: E402
    AttributionConfig,
    Evaluator,
    Example,
    RandomMasks,
    atp_example,
    blank_image,
)
from hooked_vlm.attribution.token_level import KEY_MODES  # noqa: E402
from hooked_vlm.interventions import kv_baseline  # noqa: E402
from medium import attribution_arguments, hooked_medium_llava  # noqa: E402
from timing import interleaved_rounds, time_once  # noqa: E402


def main() -> None:
    args = attribution_arguments(masks_per_example=2000, modes=KEY_MODES)
    model, inputs = hooked_medium_llava(args)
    example, answer = Example(inputs, answer=5), 5
    layout = model.layout(**inputs)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    print(f"medium LLaVA: {n_layers} layers x {n_heads} heads, d={model.cfg.d_model}, "
          f"{layout.seq_len} tokens ({int(layout.mask('image').sum())} image, "
          f"{int(layout.mask('text').sum())} text), {args.threads} threads, {args.device}; "
          f"mode {args.mode}, mean baseline\n")
    config = AttributionConfig(batch_size=args.batch, mode=args.mode, baseline="mean")
    evaluator = Evaluator(model, [example], config)
    masks = RandomMasks(n_layers, n_heads, args.batch, alpha=0.5).masks(0, args.batch)
    evaluator.evaluate(0, masks[:1])  # the baseline statistics and the prefix; a warm-up
    ablation = evaluator.ablation(0)

    def atp(recompute: int | None) -> Callable[[], object]:
        return lambda: atp_example(model, inputs, lambda lg: lg[:, answer], args.mode,
                                   recompute=recompute, **ablation)

    methods: dict[str, tuple[Callable[[], object], int]] = {
        "forward (no hooks)": (lambda: model(inputs), 1),
        "baseline forward (kv_baseline)": (lambda: kv_baseline(model, blank_image(inputs)), 1),
        "AtP, linear only (recompute=0)": (atp(0), 1),
        "AtP + AtP* on every head": (atp(None), 1),
        f"regression: {args.batch} masks on the prefix": (lambda: evaluator.evaluate(0, masks),
                                                          args.batch),
    }

    def rebuild() -> float:
        evaluator._state = None  # the regression's one-off per example: its clean prefix
        return time_once(lambda: evaluator.layout(0), args.device)

    wall, cpu, builds = interleaved_rounds(methods, args.rounds, args.device, rebuild)
    med = {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in wall}
    unit_wall, unit_cpu = med["forward (no hooks)"]
    print(f"{'per example / per mask':<44}{'wall ms':>10}{'fwd-eq':>8}{'CPU ms':>10}{'fwd-eq':>8}")
    for name, (w, c) in med.items():
        print(f"{name:<44}{w * 1e3:>10.1f}{w / unit_wall:>8.2f}{c * 1e3:>10.1f}"
              f"{c / unit_cpu:>8.2f}")
    base_w, base_c = med["baseline forward (kv_baseline)"]
    atp_w, atp_c = (a + b for a, b in zip(med["AtP + AtP* on every head"], (base_w, base_c),
                                          strict=True))
    mask_w, mask_c = med[f"regression: {args.batch} masks on the prefix"]
    build = statistics.median(builds)
    n = args.masks_per_example
    regression_w = n * mask_w + build + base_w  # every mask, the prefix, the baseline
    print(f"\nAtP + AtP* per example, baseline forward included: {atp_w * 1e3:.0f} ms wall = "
          f"{atp_w / unit_wall:.2f} forward-equivalents ({atp_c / unit_cpu:.2f} by CPU time)")
    print(f"AtP:        {1 / atp_w:8.2f} examples/s")
    print(f"regression: {1 / mask_w:8.1f} masks/s = {1 / regression_w:.4f} examples/s at {n} "
          f"masks per example (prefix build {build * 1e3:.0f} ms and baseline forward included)")
    print(f"AtP is {regression_w / atp_w:.0f}x faster per example (wall); one AtP example costs "
          f"{atp_w / mask_w:.0f} regression masks")
    print(f"\nmedians of {args.rounds} interleaved rounds; CPU = this process's CPU time (all "
          "threads).")
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        model(inputs)
        forward_peak = torch.cuda.max_memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        atp(None)()
        print(f"peak GPU memory: forward {forward_peak / 2**20:.0f} MiB, AtP "
              f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
