"""What in native training makes a narrow gate? Train native variants, study each, tabulate.

Each variant is tiny-native's recipe (``hooked_vlm.training.train.DEFAULTS``) with one factor
changed, same seed, data, steps and size otherwise:

- ``a-recipe``: tiny-native's own recipe (understanding conversations, 25 % text->image rows);
- ``b-pretrain``: + image->caption rows with the loss on every caption token, the first word
  predicted at EOI (interleaved pretraining data, as Chameleon and Emu3 see it);
- ``c-pretrain-codes``: (b) + next-code loss on the image tokens of every row that reads an
  image (image modelling: the image positions are busy predicting the next code);
- ``d-generate``: half of the rows text->image instead of a quarter;
- ``e-deep``: 8 decoder layers instead of 4.

Steps (each resumable: a finished run or study is skipped)::

    python scripts/gate_emergence.py train [--variants a-recipe,b-pretrain] [--seeds 0,1]
    python scripts/gate_emergence.py study [--n 64]      # the Narrow Gate study on each
    python scripts/gate_emergence.py table [--png docs/what-makes-a-gate.png]
                                                         # table + figure -> runs/gate-emergence

Runs go to ``runs/gate-emergence/<variant>/seed<k>/`` (weights + ``training.json`` with the
settings); the VQ tokenizer, the same for every variant of a seed, is fitted once
(``--vq-cache``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

VARIANTS: dict[str, dict[str, object]] = {
    "a-recipe": {},
    "b-pretrain": {"pretrain": 0.25},
    "c-pretrain-codes": {"pretrain": 0.25, "image_modelling": True},
    "d-generate": {"generate": 0.5},
    "e-deep": {"layers": 8},
}
ROOT = Path("runs/gate-emergence")


def run_dir(variant: str, seed: int, root: Path = ROOT) -> Path:
    return root / variant / f"seed{seed}"


def train(variants: list[str], seeds: list[int], root: Path, vq_cache: Path) -> None:
    from hooked_vlm.training import train_tiny

    for seed in seeds:
        for variant in variants:
            out = run_dir(variant, seed, root)
            if (out / "training.json").exists():
                print(f"{out}: trained already")
                continue
            print(f"training {variant} (seed {seed}) -> {out}", flush=True)
            train_tiny("tiny-native", out, seed=seed, vq_cache=vq_cache, **VARIANTS[variant])


def study(variants: list[str], seeds: list[int], root: Path, n: int) -> None:
    """The Narrow Gate study (every stage, the synthetic data) on each trained variant."""
    from hooked_vlm.studies import get_study, run_study

    narrow_gate = get_study("narrow-gate")
    for seed in seeds:
        for variant in variants:
            model = run_dir(variant, seed, root)
            if not (model / "training.json").exists():
                print(f"{model}: not trained yet (run the train step)")
                continue
            config = narrow_gate.config(model=str(model), model_config="tiny-native",
                                        data="synthetic", n=n)
            print(f"Narrow Gate study on {variant} (seed {seed})", flush=True)
            run_study(narrow_gate, config, model / "narrow-gate")


REFERENCES = ("tiny-gate", "tiny-llava")  # the positive control and the LLM-backed model


def rows(root: Path, references: Path | None) -> list[dict[str, Any]]:
    """One row per studied variant and seed (and per reference model studied under
    ``references/<name>``): the study's numbers and the held-out accuracy of its training."""
    from hooked_vlm.studies.demo.contrast import narrow_gate_row

    out = []
    for variant in VARIANTS:
        for seed_dir in sorted((root / variant).glob("seed*")):
            if (seed_dir / "narrow-gate" / "results" / "steering.json").exists():
                training = json.loads((seed_dir / "training.json").read_text())
                out.append({"name": f"{variant} / {seed_dir.name}", "variant": variant,
                            "classify": training["eval"]["classify"],
                            **narrow_gate_row(seed_dir / "narrow-gate")})
    for name in REFERENCES if references else ():
        if (references / name / "results" / "steering.json").exists():
            out.append({"name": name, "variant": name, "classify": _shipped_classify(name),
                        **narrow_gate_row(references / name)})
    return out


def _shipped_classify(name: str) -> float:
    """An embedded model's held-out classification accuracy, from its training report."""
    from hooked_vlm.model_configs import load_model_config

    location = Path(load_model_config(name).location)
    return json.loads((location / "training.json").read_text())["eval"]["classify"]


def table(found: list[dict[str, Any]]) -> str:
    """The emergence table (markdown): one row per model, the study's main measures."""
    head = ["model", "classify (held-out)", "EOI share of text→image attn, max (layer; "
            "uniform)", "VQA left, gate / image / all cut (mask)", "the same (zero)",
            "class acc. left, gate / image / all cut (mask)", "EOI patching flip rate, max",
            "χ of EOI, last layer (chance)", "cosine text·image, max", "steering flips, max"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in found:
        rel, share = r["relative"], r["gate_share"]
        cells = [
            r["name"], _f(r["classify"]),
            f"{share['max']:.3f} ({share['layer']}; {share['uniform']:.3f})",
            _pair(rel.get("mask", {}).get("vqa_accuracy")),
            _pair(rel.get("zero", {}).get("vqa_accuracy")),
            _pair(rel.get("mask", {}).get("accuracy")),
            f"{r['patching']['flip_rate']:.2f} (layer {r['patching']['layer']})",
            f"{_f(r['overlap'] and r['overlap']['gate_last'])} "
            f"({_f(r['overlap'] and r['overlap']['chance'])})",
            _f(r["gap"] and r["gap"]["cosine_max"]),
            _f(r["steering"] and r["steering"]["flip_toward_target"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _f(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _pair(cut: dict[str, float | None] | None) -> str:
    return "–" if not cut else " / ".join(_f(cut.get(c)) for c in ("gate", "image", "all"))


def figure_page(found: list[dict[str, Any]], out: Path) -> Path:
    """``out``: a self-contained page with the paper's Fig. 1 (right) per metric and the EOI
    share of text->image attention per layer, every model on one figure."""
    from hooked_vlm.storage import write_atomic
    from hooked_vlm.studies.demo.contrast import gate_vs_image_points
    from hooked_vlm.viz.demo import gate_share_figure, gate_vs_image_figure
    from hooked_vlm.viz.report import FigureItem, Section, report_html

    figures = [
        FigureItem(gate_vs_image_figure(
            gate_vs_image_points({r["name"]: r for r in found}, "mask", metric), title, "mask"),
            f"{title}: with text→EOI cut (x) and text→image tokens cut (y), over clean.")
        for metric, title in (("vqa_accuracy", "VQA accuracy"),
                              ("accuracy", "Classification accuracy"))
    ]
    figures.append(FigureItem(gate_share_figure(
        {r["name"]: (r["layers"], r["gate_share"]["per_layer"]) for r in found},
        {r["name"]: r["gate"] for r in found}), "Share of text→image attention on the gate."))
    page = report_html(
        "What makes a narrow gate?", {"models": len(found)},
        [Section("What makes a gate", figures=figures)],
        intro="Native tiny models that differ in one training factor (scripts/gate_emergence.py),"
              " each studied by the Narrow Gate study; tiny-gate is the positive control, "
              "tiny-llava the LLM-backed reference.")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, page)
    return out


def screenshot(page: Path, png: Path, size: str = "1100,1500") -> None:
    """``png``: the page drawn by headless Chromium (for the README)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.browser import FLAGS, find_chromium

    chromium = find_chromium()
    if chromium is None:
        raise SystemExit("no chromium: apt-get install -y chromium")
    flags = [f for f in FLAGS if f != "--remote-debugging-pipe"]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([chromium, *flags, f"--user-data-dir={tmp}/profile",
                        f"--window-size={size}", "--virtual-time-budget=5000",
                        f"--screenshot={png.resolve()}", page.resolve().as_uri()],
                       check=True, stderr=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=["train", "study", "table"])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--vq-cache", type=Path, default=ROOT / "vq-cache")
    parser.add_argument("--n", type=int, default=64, help="examples per task of the study")
    parser.add_argument("--references", type=Path, default=Path("results/demo/narrow-gate"),
                        help="Narrow Gate results of tiny-gate and tiny-llava (the demo's)")
    parser.add_argument("--png", type=Path, help="also draw the figure page into this PNG")
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    import torch

    torch.set_num_threads(1)  # one core per run: two runs share this 2-core machine
    if args.step == "train":
        train(variants, seeds, args.root, args.vq_cache)
    elif args.step == "study":
        study(variants, seeds, args.root, args.n)
    else:
        found = rows(args.root, args.references)
        (args.root / "table.md").write_text(table(found))
        (args.root / "summary.json").write_text(json.dumps(found, indent=1))
        page = figure_page(found, args.root / "what-makes-a-gate.html")
        print(table(found), page, sep="\n")
        if args.png:
            screenshot(page, args.png)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
