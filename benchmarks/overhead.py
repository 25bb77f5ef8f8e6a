"""Overhead of HookedVLM against plain HF and nnsight, side by side in one run.

For each model, the same weights and inputs: HF forward as users run it (SDPA), HookedVLM with
no hooks, caching every residual stream (the layers' outputs, as HF's hidden states; then
resid_pre/mid/post of every layer), the same on the bridged path that preceded module-boundary
hooks, nnsight saving every layer's output on the HF SDPA model, the attention patterns of
every layer, every hook, and greedy generation with one residual hook against HF ``generate``
(tokens/s). Each case runs once per round, rounds interleave the cases, and each case keeps
its fastest round (the least disturbed by other jobs). Prints a markdown table: ratios to HF
SDPA (generation: HookedVLM's tokens/s over HF's).

    python benchmarks/overhead.py                                   # medium LLaVA + tiny models
    python benchmarks/overhead.py --models llava-7b-shape --device cuda --dtype bfloat16

nnsight is a benchmark-only extra (``pip install -c constraints.txt nnsight``); without it
its row says so.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hooked_vlm import HookedVLM, loading  # noqa: E402
from hooked_vlm.fast_layers import bridged_hook_points  # noqa: E402
from medium import MEDIUM  # noqa: E402
from timing import time_once  # noqa: E402

EMBEDDED = ("tiny-llava", "tiny-native")


def build(name: str, device: str, dtype: torch.dtype) -> tuple[torch.nn.Module, HookedVLM, dict]:
    """``(HF model with SDPA, HookedVLM over a copy, inputs)`` for a medium or embedded model."""
    if name in EMBEDDED:
        hooked = HookedVLM.from_pretrained(name, device=device, dtype=dtype)
        image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
        inputs = dict(hooked.prepare(image, task="caption"))
        hf, _ = loading.load_hf_model(loading.resolve_source(name), dtype, device)
    else:
        hf, inputs = MEDIUM[name.removeprefix("medium-")](batch=1)
        hf.to(device, dtype)
        hooked = HookedVLM.from_hf(copy.deepcopy(hf))
    hf.set_attn_implementation("sdpa")
    inputs = {k: v.to(device) for k, v in inputs.items()}
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    return hf.eval(), hooked, inputs


def nnsight_residuals(hf: torch.nn.Module, hooked: HookedVLM) -> Callable[[], Any] | str:
    """nnsight saving every decoder layer's output, or why it cannot run."""
    try:
        from nnsight import NNsight
    except ImportError:
        return "not installed"
    names = {module: name for name, module in hooked.hf_model.named_modules()}
    # the HF path of each decoder layer (its bridge sits where the HF layer was)
    paths = [names[block] for block in hooked.bridge.blocks]
    traced = NNsight(hf)

    def envoy(path: str) -> Any:
        found: Any = traced
        for part in path.split("."):
            found = found[int(part)] if part.isdigit() else getattr(found, part)
        return found

    def run() -> list:
        saved: list = []
        with traced.trace(**INPUTS[0]):
            for path in paths:
                saved.append(envoy(path).output.save())
        return saved

    return run


INPUTS: list[dict] = []  # the inputs of the model in flight, for nnsight's trace


def cases(hf: torch.nn.Module, hooked: HookedVLM, inputs: dict, new_tokens: int) -> dict:
    n = hooked.cfg.n_layers
    posts = [f"blocks.{i}.hook_resid_post" for i in range(n)]
    residuals = [f"blocks.{i}.hook_resid_{p}" for i in range(n) for p in ("pre", "mid", "post")]
    residuals = [r for r in residuals if r in hooked.hook_names]
    patterns = [f"blocks.{i}.attn.hook_pattern" for i in range(n)]
    steer = [(f"blocks.{n // 2}.hook_resid_post", lambda x, hook: x)]
    INPUTS[:] = [inputs]

    def bridged_posts() -> Any:
        with bridged_hook_points(hooked.bridge):
            return hooked.run_with_cache(inputs, names_filter=posts)

    table: dict[str, Any] = {
        "HF forward (SDPA)": lambda: hf(**inputs),
        "HookedVLM, no hooks": lambda: hooked(inputs),
        "cache every layer's residual output":
            lambda: hooked.run_with_cache(inputs, names_filter=posts),
        "  same, bridged path (before)": bridged_posts,
        "  nnsight, every layer's output (HF SDPA model)": nnsight_residuals(hf, hooked),
        "cache resid_pre/mid/post of every layer":
            lambda: hooked.run_with_cache(inputs, names_filter=residuals),
        "cache patterns of every layer":
            lambda: hooked.run_with_cache(inputs, names_filter=patterns),
        "cache every hook": lambda: hooked.run_with_cache(inputs),
        "HF generate": lambda: hf.generate(
            **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False
        ),
        "generate, one residual hook": lambda: hooked.generate(
            inputs, max_new_tokens=new_tokens, eos_token_id=[], fwd_hooks=steer
        ),
    }
    return table


def measure(table: dict[str, Any], repeats: int, device: str) -> dict[str, float | str]:
    runnable = {k: fn for k, fn in table.items() if callable(fn)}
    best = {k: float("inf") for k in runnable}
    with torch.no_grad():
        for fn in runnable.values():
            fn()  # warm-up
        for _ in range(repeats):
            for name, fn in runnable.items():
                best[name] = min(best[name], time_once(fn, device))
    return {k: best.get(k, table[k]) for k in table}


def cell(name: str, results: dict[str, float | str]) -> str:
    value = results[name]
    if isinstance(value, str):
        return value
    if name == "HF forward (SDPA)":
        return f"1.00 ({value * 1e3:.1f} ms)"
    if name == "HF generate":
        return f"1.00 ({value * 1e3:.0f} ms)"
    if name.startswith("generate"):
        return f"{results['HF generate'] / value:.2f}× tokens/s"
    return f"{value / results['HF forward (SDPA)']:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    choices = ["medium-llava", "medium-chameleon", "llava-7b-shape", *EMBEDDED]
    parser.add_argument("--models", nargs="+", default=["medium-llava", *EMBEDDED],
                        choices=choices)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)

    columns: dict[str, dict] = {}
    for name in args.models:
        hf, hooked, inputs = build(name, args.device, dtype)
        columns[name] = measure(cases(hf, hooked, inputs, args.new_tokens), args.repeats,
                                args.device)
        seq = inputs["input_ids"].shape[1]
        print(f"# {name}: d_model={hooked.cfg.d_model}, layers={hooked.cfg.n_layers}, "
              f"seq={seq}, batch 1", file=sys.stderr)
    stamp = datetime.date.today().isoformat()
    print(f"<!-- {stamp}, {args.device}, {args.dtype}, torch threads "
          f"{torch.get_num_threads()}, min of {args.repeats} interleaved rounds, "
          f"{args.new_tokens} new tokens, {time.strftime('%H:%M')} -->")
    print("| case | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for case in next(iter(columns.values())):
        print(f"| {case} | " + " | ".join(cell(case, col) for col in columns.values()) + " |")


if __name__ == "__main__":
    main()
