"""Overhead of HookedVLM against plain HF, side by side in one run.

Prints median wall time of: HF forward as users run it (SDPA), HF eager, HookedVLM with no
hooks, run_with_cache with every hook, and run_with_cache of the attention patterns only, each
as a ratio to HF SDPA. Same weights and inputs for all.

    python benchmarks/overhead.py                    # medium LLaVA, CPU
    python benchmarks/overhead.py --arch chameleon --device cuda --repeats 20
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hooked_vlm import HookedVLM  # noqa: E402
from medium import MEDIUM  # noqa: E402
from timing import median_time  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(MEDIUM), default="llava")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)

    eager, inputs = MEDIUM[args.arch](batch=args.batch)
    eager.to(args.device, dtype)
    sdpa = copy.deepcopy(eager)
    sdpa.set_attn_implementation("sdpa")
    hooked = HookedVLM.from_hf(copy.deepcopy(eager))
    inputs = {k: v.to(args.device) for k, v in inputs.items()}
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    n_layers = hooked.cfg.n_layers

    def patterns(name: str) -> bool:
        return name.startswith("blocks.") and name.endswith("hook_pattern")

    cases = {
        "HF forward (SDPA)": lambda: sdpa(**inputs),
        "HF forward (eager)": lambda: eager(**inputs),
        "HookedVLM, no hooks": lambda: hooked(inputs),
        "run_with_cache, all hooks": lambda: hooked.run_with_cache(inputs),
        f"run_with_cache, patterns only ({n_layers} layers)":
            lambda: hooked.run_with_cache(inputs, names_filter=patterns),
    }
    seq = inputs["input_ids"].shape[1]
    print(f"# {args.arch}: d_model={hooked.cfg.d_model}, layers={n_layers}, "
          f"heads={hooked.cfg.n_heads}, seq={seq} (batch {args.batch}), {args.dtype}, "
          f"{args.device}, torch threads={torch.get_num_threads()}, median of {args.repeats}")
    with torch.no_grad():
        results = {name: median_time(fn, args.repeats, args.device) for name, fn in cases.items()}
    base = results["HF forward (SDPA)"]
    print(f"{'case':48s} {'ms':>9s} {'x HF SDPA':>10s}")
    for name, seconds in results.items():
        print(f"{name:48s} {seconds * 1e3:9.1f} {seconds / base:10.2f}")


if __name__ == "__main__":
    main()
