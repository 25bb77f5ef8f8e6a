"""No-hook overhead of HookedVLM against HF's SDPA forward, for every family of issue 18.

Each family's tiny test model is widened to a medium decoder (d_model 512, 8 heads of 64,
8 layers) with a long text after its image, so attention and matmuls dominate as they do on a
real checkpoint; the vision tower stays tiny (unwatched towers run as HF's own modules).
Same weights and inputs on both sides; the cases run in turn, ``--repeats`` times after a
warm-up, and each gets the median (CPU time on a CPU, wall time on CUDA).

    python benchmarks/families.py                       # CPU, every new family
    python benchmarks/families.py --device cuda --families gemma3 qwen3_vl --repeats 20

PaliGemma 2's decoder (Gemma 2, logit softcapping) cannot run HF's SDPA attention: its
baseline is HF's eager forward, as a user would have to run it.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from functools import partial
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hooked_vlm import HookedVLM  # noqa: E402
from hooked_vlm.families import build_tiny  # noqa: E402
from timing import time_and_cpu  # noqa: E402

FAMILIES = ["qwen2_5_vl", "qwen3_vl", "gemma3", "paligemma", "smolvlm", "molmo2"]
WIDTH, HEADS, LAYERS = 512, 8, 8


def widen(config: Any) -> Any:
    """``config`` with a medium decoder; the projector's output follows the new width."""
    config = copy.deepcopy(config)
    text = config.get_text_config()
    text.hidden_size, text.intermediate_size, text.num_hidden_layers = WIDTH, 4 * WIDTH, LAYERS
    text.num_attention_heads = text.num_key_value_heads = HEADS
    text.head_dim = WIDTH // HEADS
    if hasattr(text, "query_pre_attn_scalar"):
        text.query_pre_attn_scalar = WIDTH // HEADS
    if getattr(text, "sliding_window", None):
        text.sliding_window = 4096
    if getattr(text, "layer_types", None):
        text.layer_types = [text.layer_types[i % len(text.layer_types)] for i in range(LAYERS)]
    rope = getattr(text, "rope_parameters", None) or {}
    if "mrope_section" in rope:
        rope["mrope_section"] = [16, 8, 8]
    vision = getattr(config, "vision_config", None)
    for owner, key in ((vision, "out_hidden_size"), (vision, "projection_dim"),
                       (getattr(config, "adapter_config", None), "text_hidden_size"),
                       (config, "projection_dim")):
        if owner is not None and hasattr(owner, key):
            setattr(owner, key, WIDTH)
    if type(config).__name__ == "Qwen2VLConfig":
        vision.hidden_size = WIDTH  # Qwen2-VL's merger writes vision_config.hidden_size
    return config


def medium(name: str, text_tokens: int) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """The family's tiny model widened (:func:`widen`) and its inputs with ``text_tokens``
    more words after them."""
    tiny = build_tiny(name)
    torch.manual_seed(0)
    model = type(tiny.model)(widen(tiny.model.config)).eval()
    inputs = dict(tiny.inputs)
    batch, first_word = inputs["input_ids"].shape[0], int(inputs["input_ids"][0, -1])
    more = torch.full((batch, text_tokens), first_word)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], more], 1)
    inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(more)], 1)
    for key, fill in (("token_type_ids", int(name == "paligemma")), ("mm_token_type_ids", 0)):
        if key in inputs:
            inputs[key] = torch.cat([inputs[key], torch.full_like(more, fill)], 1)
    return model, inputs


def interleaved(fns: list[Any], repeats: int, device: str) -> list[float]:
    """Median seconds of each of ``fns``, run in turn ``repeats`` times after a warm-up, so a
    load change on a shared machine hits every case alike. On CPU the process's CPU time is
    measured (waiting for a core is not counted), on CUDA the wall time."""
    times: list[list[float]] = [[] for _ in fns]
    for fn in fns:
        fn()
    for _ in range(repeats):
        for spent, fn in zip(times, fns, strict=True):
            wall, cpu = time_and_cpu(fn, device)
            spent.append(wall if device.startswith("cuda") else cpu)
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=FAMILIES)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--text-tokens", type=int, default=480)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"# decoder d_model={WIDTH}, {HEADS} heads, {LAYERS} layers, +{args.text_tokens} text "
          f"tokens, batch 2, fp32, {args.device}, torch threads={torch.get_num_threads()}, "
          f"median of {args.repeats}")
    print(f"{'family':12s} {'seq':>5s} {'HF SDPA ms':>11s} {'HF eager':>9s} {'HookedVLM':>10s}")
    for name in args.families:
        eager, inputs = medium(name, args.text_tokens)
        eager.to(args.device)
        inputs = {k: v.to(args.device) for k, v in inputs.items()}
        sdpa = copy.deepcopy(eager)
        softcapped = getattr(eager.config.get_text_config(), "attn_logit_softcapping", None)
        if not softcapped:
            sdpa.set_attn_implementation("sdpa")
        hooked = HookedVLM.from_hf(copy.deepcopy(eager))
        cases = [partial(sdpa, **inputs), partial(eager, **inputs), partial(hooked, inputs)]
        with torch.no_grad():
            base, slow, ours = interleaved(cases, args.repeats, args.device)
        label = "(eager)" if softcapped else ""
        print(f"{name:12s} {inputs['input_ids'].shape[1]:5d} {base * 1e3:9.1f}{label:2s} "
              f"{slow / base:9.2f} {ours / base:10.2f}")


if __name__ == "__main__":
    main()
