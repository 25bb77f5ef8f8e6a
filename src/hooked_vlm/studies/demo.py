"""The demo study: where do text tokens read the image from, native vs LLM-backed?

Runs on the built-in tiny models (no download). For each model it computes the layout, caches
every layer's attention pattern, and measures the share of text->image attention that lands on
[EOI] and on the last image token per layer (Narrow Gate, analysis 3). It then knocks out
("mask" mode, every layer and head) the text->[EOI] edges, the text->image edges with [EOI]
kept, and a random-image-token control, and reports how much of the clean next-token
distribution survives (sum of min(p, q)). Last, it patches the residual at [EOI] (the last
image token without one) from the other image, layer by layer (analysis 6a), and reports how
close the patched next-token distribution moves to the source's.
Results go to a results directory (config, one record per model, a summary table, an HTML
figure per model).

The tiny models' weights are RANDOM: the numbers show that the pipeline runs end to end, not
how real Chameleon or LLaVA behave. Use ``--model`` with a real checkpoint for that.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from rich.progress import track

from hooked_vlm.analysis import cross_modal_attention
from hooked_vlm.interventions import distribution_overlap, knockout, patch_sweep
from hooked_vlm.layout import TokenLayout
from hooked_vlm.model import HookedVLM
from hooked_vlm.studies import DEMO_CHOICES, DEMO_DEFAULT
from hooked_vlm.studies.results import ResultsDir
from hooked_vlm.testing.tiny import build_tiny
from hooked_vlm.viz import flow_figure


def run_demo(
    out_dir: str | Path, models: tuple[str, ...] = DEMO_DEFAULT, log: Callable[[str], None] = print
) -> list[dict]:
    """Run the demo on ``models`` (tiny model names), writing into ``out_dir``; returns rows."""
    unknown = [m for m in models if m not in DEMO_CHOICES]
    if unknown or not models:
        raise ValueError(f"unknown demo model(s) {unknown}; choose from {', '.join(DEMO_CHOICES)}")
    config = {"study": "demo", "schema": 3, "models": list(models), "weights": "random"}
    store = ResultsDir(out_dir, config)
    for name in track(models, description="demo models"):
        if store.done(name):
            log(f"{name}: already done, skipping (resumed)")
            continue
        store.save(name, _study_one(name, store))
    rows = [store.load(name) for name in models]
    _write_summary(store, rows)
    return rows


def _study_one(name: str, store: ResultsDir) -> dict:
    tiny = build_tiny(name, n_layers=4)
    model = HookedVLM.from_hf(tiny.model)
    layout = model.layout(**tiny.inputs)
    with torch.no_grad():
        _, cache = model.run_with_cache(
            tiny.inputs, names_filter=lambda n: n.startswith("blocks.") and "hook_pattern" in n
        )
    per_layer = []
    for layer in range(model.cfg.n_layers):
        flow = cross_modal_attention(cache[f"blocks.{layer}.attn.hook_pattern"], layout)
        per_layer.append(
            {"layer": layer, "eoi": flow.eoi_share, "last_image": flow.last_image_share}
        )
    flow_figure(per_layer, f"{name} (tiny, random weights)").write_html(store.path(f"{name}.html"))
    return {
        "model": name,
        "architecture": model.cfg.architecture,
        "native": model.cfg.native,
        "image_tokens_per_example": [int(m.sum()) for m in layout.mask("image")],
        "has_eoi": layout.tokens.eoi is not None,
        "per_layer": per_layer,
        "knockout": _knockouts(model, tiny.inputs, layout),
        "patching": _eoi_patching(model, tiny.inputs),
    }


def _knockouts(model: HookedVLM, inputs: dict, layout: TokenLayout) -> dict[str, float]:
    """Mean overlap of the last position's next-token distribution with the clean one."""
    keys = {"image (EOI kept)": "image", "random 3 image tokens": "random_image:3"}
    if layout.tokens.eoi is not None:
        keys = {"EOI": "eoi", **keys, "image and EOI": "image_and_eoi"}
    else:
        keys["image (all of it)"] = "image_and_eoi"
    with torch.no_grad():
        clean = model(inputs)[:, -1]
        return {
            label: distribution_overlap(
                model.run_with_hooks(inputs, fwd_hooks=knockout(model, layout, "text", key))[:, -1],
                clean,
            ).mean().item()
            for label, key in keys.items()
        }


def _eoi_patching(model: HookedVLM, inputs: dict) -> list[dict[str, float]]:
    """Per layer: overlap of patched and source next-token distributions (mean of the pair).

    Both examples get example 0's text, so they differ only in the image; each is patched with
    the other's residual at the gate position.
    """
    target = {**inputs, "input_ids": inputs["input_ids"][:1].expand(2, -1)}
    source = {k: v.flip(0) if k != "input_ids" else v for k, v in target.items()}
    layout = model.layout(**target)
    gate = "eoi" if layout.tokens.eoi is not None else "last_image"
    with torch.no_grad():
        source_last = model(source)[:, -1]
        clean_last = model(target)[:, -1]
        patched = patch_sweep(model, target, source, "blocks.{layer}.hook_resid_pre", gate)
    baseline = distribution_overlap(clean_last, source_last).mean().item()
    return [
        {"layer": layer, "position": gate, "clean_overlap_with_source": baseline,
         "overlap_with_source": distribution_overlap(logits, source_last).mean().item()}
        for layer, logits in enumerate(patched)  # patched: [layer, batch, vocab]
    ]


def _write_summary(store: ResultsDir, rows: list[dict]) -> None:
    lines = ["model\tarchitecture\tnative\tlayer\teoi_share\tlast_image_share"]
    for row in rows:
        for r in row["per_layer"]:
            lines.append(
                f"{row['model']}\t{row['architecture']}\t{row['native']}\t{r['layer']}\t"
                f"{r['eoi']:.4f}\t{r['last_image']:.4f}"
            )
    store.path("summary.tsv").write_text("\n".join(lines) + "\n")
    knock = ["model\tknocked-out keys (text queries, every layer)\toverlap with clean"]
    for row in rows:
        knock += [f"{row['model']}\t{k}\t{v:.4f}" for k, v in row["knockout"].items()]
    store.path("knockout.tsv").write_text("\n".join(knock) + "\n")
    patch = ["model\tpatched position\tlayer\toverlap with source (clean: no patch)"]
    for row in rows:
        patch += [
            f"{row['model']}\t{r['position']}\t{r['layer']}\t{r['overlap_with_source']:.4f} "
            f"({r['clean_overlap_with_source']:.4f})"
            for r in row["patching"]
        ]
    store.path("patching.tsv").write_text("\n".join(patch) + "\n")
