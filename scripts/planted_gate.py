"""Plant a narrow gate in tiny-native, then fine-tune it away (a controlled check of the method).

tiny-native has no narrow gate: cutting text→EOI attention changes nothing, so the Narrow Gate
paper's EOI-masked fine-tune has nothing to show on it. This script makes a known ground truth:

- step A: fine-tune tiny-native with text→image-token attention masked (``masked_keys="image"``),
  so text can read the image only through EOI: a gate is planted;
- step B: fine-tune the step-A checkpoint with text→EOI masked (the paper's experiment).

Then it prints one markdown table (held-out accuracy and the knockout probe: before A, after A,
after B; plus the probe with text→image tokens *and* EOI cut, where no image is reachable: the
floor) and the wall time of each step. Both steps use the fine-tuning defaults unless told.

Usage:
    OMP_NUM_THREADS=1 python scripts/planted_gate.py --out runs/planted-gate
    OMP_NUM_THREADS=1 python scripts/planted_gate.py --out /tmp/pg --steps 20 --n-eval 32
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from hooked_vlm import HookedVLM
from hooked_vlm.data.synthetic import synthetic_dataset
from hooked_vlm.training.finetune import finetune, knockout_probe, summary_rows

STEPS = {"A": "image", "B": "eoi"}  # step -> the keys its training mask hides from text
FLOOR = "image_and_eoi"  # the layout group of image tokens and EOI: no image reachable


def run_steps(out: Path, seed: int = 0, **options: Any) -> dict[str, dict[str, Any]]:
    """Steps A and B into ``out/A`` and ``out/B``; each report gets ``wall_seconds``."""
    reports: dict[str, dict[str, Any]] = {}
    model, model_config = "tiny-native", None
    for step, keys in STEPS.items():
        start = time.perf_counter()
        reports[step] = finetune(model, out / step, model_config=model_config, seed=seed,
                                 masked_keys=keys, **options)
        reports[step]["wall_seconds"] = round(time.perf_counter() - start, 1)
        model, model_config = out / step, "tiny-native"
    return reports


def floor_probe(out: Path, n_eval: int) -> dict[str, dict[str, float]]:
    """Probe accuracy and Δ log p(answer) with text→image tokens and EOI both cut, for
    tiny-native and the checkpoints of steps A and B (same held-out images as the reports)."""
    rows = list(synthetic_dataset("test", n_eval))
    models = {"before": HookedVLM.from_pretrained("tiny-native")}
    models |= {step: HookedVLM.from_pretrained(out / step, model_config="tiny-native")
               for step in STEPS}
    probes = {name: knockout_probe(vlm, rows, keys=(FLOOR,))["mean"]
              for name, vlm in models.items()}
    return {name: {"probe accuracy, text→image+EOI cut": p["accuracy"][FLOOR],
                   "probe Δ log p(answer), text→image+EOI cut": p["logprob_change"][FLOOR]}
            for name, p in probes.items()}


def markdown_table(
    reports: dict[str, dict[str, Any]], floor: dict[str, dict[str, float]] | None = None
) -> str:
    """Before A | after A (text→image masked) | after B (text→EOI masked), one row a figure;
    ``floor`` (:func:`floor_probe`) adds its rows."""
    columns = {"tiny-native (before A)": reports["A"]["before"],
               "after A: text→image masked (gate planted)": reports["A"]["after"],
               "after B: text→EOI masked (paper's run)": reports["B"]["after"]}
    rows = {name: summary_rows(m) for name, m in columns.items()}
    if floor is not None:
        for name, model in zip(columns, ("before", "A", "B"), strict=True):
            rows[name] |= floor[model]
    n = reports["A"]["after"]["probe"]["n"]
    lines = [f"| held-out (n = {n}) | " + " | ".join(columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for label in rows[next(iter(columns))]:
        lines.append(f"| {label} | " + " | ".join(f"{r[label]:.3f}" for r in rows.values()) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="writes OUT/A and OUT/B")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help="optimiser steps of each step (default 200)")
    parser.add_argument("--n-eval", type=int, help="held-out images (default 256)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    options = {k: v for k, v in (("steps", args.steps), ("n_eval", args.n_eval)) if v is not None}
    reports = run_steps(args.out, seed=args.seed, **options)
    start = time.perf_counter()
    floor = floor_probe(args.out, reports["A"]["after"]["probe"]["n"])
    floor_seconds = time.perf_counter() - start
    print(markdown_table(reports, floor))
    # B starts from A's saved checkpoint: its "before" must repeat A's "after"
    drift = max(abs(a - b) for a, b in zip(summary_rows(reports["A"]["after"]).values(),
                                             summary_rows(reports["B"]["before"]).values(),
                                             strict=True))
    print(f"\nstep B before vs step A after, max difference: {drift:.4f}")
    for step, report in reports.items():
        print(f"step {step} (text→{report['masked']} masked): {report['wall_seconds']:.0f} s "
              f"wall, {report['seconds']}, final loss {report['final_loss']:.3f}")
    print(f"floor probe (text→image+EOI cut, 3 models): {floor_seconds:.0f} s wall")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
