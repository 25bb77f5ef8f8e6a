"""Memory of the attention-flow analysis: reduced in the pattern hooks vs caching the patterns.

The Narrow Gate study's flow stage keeps, per layer, the text->image attention mass per
image-side key (``text_to_image_mass`` inside each ``hook_pattern`` hook: ``[batch, n_keys]``).
The naive way caches every layer's pattern (``[batch, heads, S, S]``) and reduces afterwards.
Both run the same medium random LLaVA (d_model 512, 8 heads, ``--layers`` layers; the image
size is chosen so that image tokens are about half of the sequence) at S = 256, 1024, 2048.

What is measured, per sequence length and method, each in a fresh process:

- ``peak``: growth of the process's peak resident memory (``ru_maxrss``) during the one
  forward + reduction, over the resident memory with the model and inputs built. It counts
  every allocation, transient ones included. ``tracemalloc`` would miss them: it sees Python's
  allocator only, not torch's CPU tensors.
- ``kept``: bytes the method holds when the forward is done (the reduced masses, or the cache).
- ``L*H*S^2``: the size of all patterns in float32, for scale.

The reducing path's peak is one layer's pattern at a time (eager attention has to build it for
the hook to see it): it grows as H*S^2 of a single layer, while what it keeps grows with S only;
caching grows as L*H*S^2 and dominates memory at long sequences.

    python benchmarks/flow_memory.py                  # S = 256 1024 2048, 8 layers
    python benchmarks/flow_memory.py --lengths 512 1024 --layers 4
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hooked_vlm import HookedVLM  # noqa: E402
from hooked_vlm.analysis import flow_masks, image_key_values, text_to_image_mass  # noqa: E402
from medium import medium_llava  # noqa: E402

PATCH = 14


def build(length: int, n_layers: int) -> tuple[HookedVLM, dict]:
    """A medium LLaVA whose image takes about half of ``length`` tokens, the rest text."""
    side = max(1, round((length / 2) ** 0.5))
    text = length - side * side
    hf_model, inputs = medium_llava(text_tokens=text, n_layers=n_layers,
                                    image_size=side * PATCH)
    return HookedVLM.from_hf(hf_model), inputs


def _decoder_pattern(name: str) -> bool:
    """The language decoder's patterns (not the vision tower's)."""
    return name.startswith("blocks.") and name.endswith("attn.hook_pattern")


def reduce_in_hooks(model: HookedVLM, inputs: dict) -> dict[int, torch.Tensor]:
    """The study's way: each pattern hook keeps ``[batch, n_keys]`` and lets the pattern go."""
    queries, keys = flow_masks(model.layout(**inputs))
    kept: dict[int, torch.Tensor] = {}

    def hook(pattern: torch.Tensor, hook: object) -> None:
        kept[hook.layer()] = image_key_values(text_to_image_mass(pattern, queries, keys), keys)

    model.run_with_hooks(inputs, fwd_hooks=[(_decoder_pattern, hook)])
    return kept


def cache_then_reduce(model: HookedVLM, inputs: dict) -> dict[str, torch.Tensor]:
    """The naive way: cache every layer's pattern, reduce afterwards (the cache is kept)."""
    queries, keys = flow_masks(model.layout(**inputs))
    _, cache = model.run_with_cache(inputs, names_filter=_decoder_pattern)
    masses = [text_to_image_mass(cache[name], queries, keys) for name in cache]
    return {**dict(cache.items()), "masses": torch.stack(masses)}


def child(length: int, method: str, n_layers: int) -> dict:
    torch.set_grad_enabled(False)
    model, inputs = build(length, n_layers)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    kept = (reduce_in_hooks if method == "reduce" else cache_then_reduce)(model, inputs)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_mib": (after - before) / 1024,
            "kept_mib": sum(t.numel() * t.element_size() for t in kept.values()) / 2**20,
            "seq": int(inputs["input_ids"].shape[1]), "heads": model.cfg.n_heads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 2048])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--child", nargs=2, metavar=("LENGTH", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.child:
        print(json.dumps(child(int(args.child[0]), args.child[1], args.layers)))
        return
    rows = []
    for length in args.lengths:
        results = {}
        for method in ("reduce", "cache"):
            command = [sys.executable, __file__, "--layers", str(args.layers),
                       "--child", str(length), method]
            out = subprocess.run(command, capture_output=True, text=True, check=True)
            results[method] = json.loads(out.stdout.strip().splitlines()[-1])
        seq, heads = results["reduce"]["seq"], results["reduce"]["heads"]
        patterns = args.layers * heads * seq * seq * 4 / 2**20
        rows.append((seq, results["reduce"], results["cache"], patterns))
    print(f"attention-flow memory, medium LLaVA, {args.layers} layers, batch 1, float32 "
          "(MiB; peak = growth of peak RSS during forward + reduction)")
    print(f"{'S':>6} {'reduce peak':>12} {'reduce kept':>12} {'cache peak':>11} "
          f"{'cache kept':>11} {'L*H*S^2':>9} {'peak ratio':>11}")
    for seq, red, cache, patterns in rows:
        ratio = cache["peak_mib"] / max(red["peak_mib"], 1e-9)
        print(f"{seq:>6} {red['peak_mib']:>12.1f} {red['kept_mib']:>12.3f} "
              f"{cache['peak_mib']:>11.1f} {cache['kept_mib']:>11.1f} {patterns:>9.1f} "
              f"{ratio:>10.1f}x")


if __name__ == "__main__":
    main()
