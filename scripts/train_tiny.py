"""Train the embedded tiny models (tiny-native, tiny-gate, tiny-llava) into the package.

Usage:
    python scripts/train_tiny.py tiny-native tiny-gate tiny-llava  # -> src/hooked_vlm/embedded/
    python scripts/train_tiny.py tiny-llava --out /tmp/tl --steps 200 --n-eval 100
    python scripts/train_tiny.py tiny-gate --vq-cache runs/vq-cache  # reuse a fitted VQ

Runs on CPU with one thread by default (deterministic; the committed weights were made so).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from hooked_vlm.training import train_tiny

EMBEDDED = Path(__file__).resolve().parents[1] / "src" / "hooked_vlm" / "embedded"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", choices=["tiny-native", "tiny-gate", "tiny-llava"])
    parser.add_argument("--out", type=Path, help="output directory (one model only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--n-train", type=int)
    parser.add_argument("--n-eval", type=int)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--vq-cache", type=Path, help="keep/reuse fitted VQ tokenizers here")
    args = parser.parse_args(argv)
    if args.out is not None and len(args.names) > 1:
        parser.error("--out takes one model name")
    torch.set_num_threads(args.threads)
    options = {k: v for k, v in (("n_train", args.n_train), ("n_eval", args.n_eval))
               if v is not None}
    for name in args.names:
        out = args.out or EMBEDDED / name
        report = train_tiny(name, out, seed=args.seed, steps=args.steps,
                            vq_cache=args.vq_cache, **options)
        summary = {k: report[k] for k in ("steps", "final_loss", "seconds")}
        summary["eval"] = {k: v for k, v in report.get("eval", {}).items()
                           if k not in ("examples", "chance", "majority")}
        print(f"{name} -> {out}\n{json.dumps(summary, indent=1)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
