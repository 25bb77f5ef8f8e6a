"""The Narrow Gate report: one HTML page from a results directory (no model needed).

``write_report(out_dir)`` reads ``config.json``, ``session.json``, ``timings.json`` and
``results/<stage>.json|npz`` and draws a section per finished stage, each figure with a
caption in plain words. Run it again at any time to redraw.

Example:
    >>> write_report("results/narrow_gate")
    PosixPath('results/narrow_gate/report.html')
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hooked_vlm.studies.narrow_gate.stage_flow import FLOW, FlowResult
from hooked_vlm.studies.narrow_gate.stage_knockout import (
    KNOCKOUT,
    PROGRESSIVE,
    KnockoutResult,
    ProgressiveResult,
)
from hooked_vlm.studies.narrow_gate.stage_patching import (
    PATCHING,
    STEERING,
    PatchingResult,
    SteeringResult,
)
from hooked_vlm.studies.narrow_gate.stage_representations import (
    GAP,
    OVERLAP,
    GapResult,
    OverlapResult,
)
from hooked_vlm.studies.report import model_line, run_facts, write_page
from hooked_vlm.viz import attention_on_image_grid
from hooked_vlm.viz.narrow_gate import (
    flow_keys_figure,
    flow_stack_figure,
    homogeneity_figure,
    knockout_figure,
    modality_gap_figure,
    overlap_figure,
    patching_figure,
    progressive_figure,
    steering_figure,
)
from hooked_vlm.viz.report import FigureItem, Section, Table

PICTURE_LAYERS = 4  # panels per picture: evenly spaced layers
REPORT_WIDTH = 1100  # pixels: figures with a fixed size fit the page's column


def write_report(out_dir: str | Path) -> Path:
    """Draw ``out_dir/report.html`` from the results written so far; returns its path."""
    root = Path(out_dir)
    config, info = run_facts(root)
    sections = []
    for stage, draw in _SECTIONS:
        result = stage.result.load(root)
        if result is not None:
            sections.append(draw(stage.title, result))
    header = {
        "model": model_line(info, f"{info['n_layers']} layers, d_model {info['d_model']}"),
        "gate": info["gate_note"],
        "data": ", ".join(f"{task}: {src}" for task, src in info["data"].items()),
        "examples per task": info["n"],
        "device / dtype": f"{info['device']} / {info['dtype']}",
        "seed": config["seed"],
    }
    intro = ("Does image information reach text through one token? Serra et al. (\"The Narrow "
             "Gate\") find that native multimodal models route it through the end-of-image token "
             "[EOI], while encoder-based models read many image tokens. Each section below "
             "repeats one of their analyses on this model.")
    return write_page(root, f"The Narrow Gate study: {info['model']}", header, sections, intro,
                      info.get("notes", [])[1:], [stage.name for stage, _ in _SECTIONS])


# ---------------------------------------------------------------------- one section per stage


def _gap(title: str, v: GapResult) -> Section:
    med = np.array(v.cosine["median"])
    gap = FigureItem(
        modality_gap_figure(v.layers, v.cosine, v.abs_cosine),
        f"Each of {v.n} images is followed by the caption prompt and its own reference "
        "caption; one random text token after the image and one random image token are taken "
        "from the residual stream after each block; the line is the median "
        "cosine between them, the band the inter-quartile range (blue: signed, orange: absolute "
        f"value, as the released code). Median cosine ranges {med.min():.3f}..{med.max():.3f}: "
        "near 0 means text and image live in separate directions (the paper's native models "
        "stay at or below 0.08; Pixtral rises to about 0.4).")
    homog = FigureItem(
        homogeneity_figure(v.layers, v.homogeneity),
        "The same text and image vectors, clustered per layer by advanced density peaks; the "
        "score is the homogeneity of the clusters with respect to modality: 1 when no cluster "
        "mixes text and image, 0 when clusters ignore modality. Presets: 'neurips' (cosine "
        "distances, Z = 1.65) and 'v1' (normalised vectors, Euclidean, Z = 1.2). Clusters per "
        "layer: " + "; ".join(f"{p} {', '.join(map(str, c))}"
                              for p, c in v.clusters.items())
        + " (a single cluster scores 0 whatever the modalities).")
    notes = [f"homogeneity ({preset}) not computed for {e}" for preset, errors
             in v.homogeneity_errors.items() for e in errors[:2]]
    return Section(title, "Are text and image tokens represented apart?", [gap, homog],
                   notes=notes)


def _flow(title: str, v: FlowResult) -> Section:
    gate_name = "EOI" if v.has_eoi else "last image token"
    parts = ("the EOI, the last image token" if v.has_eoi else
             "the last image token (the gate: this model has no EOI)")
    categories = {"EOI": v.eoi, "last image token": v.last_image,
                  f"other keys > {v.threshold:.0%}": v.salient,
                  "internal image": v.internal_image}
    if not v.has_eoi:
        categories.pop("EOI")
    gate = np.array(v.eoi if v.has_eoi else v.last_image)
    stack = FigureItem(
        flow_stack_figure(v.layers, categories),
        f"Attention from the text after the image (prompt and reference caption) to the "
        f"{v.n_keys} image-side positions, summed over heads and {v.n} captioned images "
        "and normalised per layer. Each bar "
        f"splits it into {parts}, any other position holding "
        f"more than {v.threshold:.0%} (up to {max(v.n_salient)} positions in a layer), and "
        f"all remaining image tokens. The {gate_name} takes {gate.min():.0%}..{gate.max():.0%} "
        "per layer (the paper: 36-54% on EOI in Chameleon-7B, at most 7% in Pixtral)."
        + (f" With only {v.n_keys} image-side positions, a position holding an even share "
           f"(1/{v.n_keys} = {1 / v.n_keys:.1%}) is already above the threshold: most of "
           "the image then lands in the 'other keys' band (the paper's images have 1024 tokens;"
           " raise flow_threshold to separate them)." if 1 / v.n_keys > v.threshold
           else ""))
    keys = FigureItem(
        flow_keys_figure(v.layers, v.shares, v.key_labels),
        "The same shares, position by position (columns in sequence order; the gate is "
        f"{'the EOI column' if v.has_eoi else 'the last image column'}): a bright column "
        "is a position that text reads from at that layer.")
    figures = [stack, keys]
    if v.heat is not None:
        n_layers = len(v.layers)
        picks = sorted({round(i * (n_layers - 1) / (PICTURE_LAYERS - 1))
                        for i in range(PICTURE_LAYERS)}) if n_layers > 1 else [0]
        for heat, picture, row in zip(v.heat, v.picture, v.picture_rows,
                                      strict=True):
            fig = attention_on_image_grid(
                picture, heat[picks], [f"layer {v.layers[p]}" for p in picks],
                title=f"caption example {row}: attention of the last text position",
                fit=v.picture_fit, width=REPORT_WIDTH)
            figures.append(FigureItem(
                fig, f"Caption example {row}: attention of the last text position (the "
                "caption's last token) to each image patch, summed over heads, "
                "drawn over the picture at a few layers on one colour scale."
                + (" Attention to EOI is not on the picture: it is in the bars above."
                   if v.has_eoi else "")))
    return Section(title, "Which image-side positions does text attend to?", figures,
                   notes=[] if v.has_eoi else [v.gate_note])


def _overlap(title: str, v: OverlapResult) -> Section:
    names = {"eoi": "EOI", "last_image": "last image token", "image_mean": "mean of image tokens"}
    chi = {names[k]: c for k, c in v.chi.items()}
    last = ", ".join(f"{k} {c[-1]:.2f}" for k, c in chi.items())
    fig = FigureItem(
        overlap_figure(v.layers, chi, v.chance),
        f"For {v.n} labelled images ({v.n_classes} classes): the fraction of each "
        f"image's k = {v.k} nearest neighbours (Euclidean, residual after each block) that "
        f"share its class, {'class-balanced' if v.class_balanced else 'averaged over images'}"
        f". The dashed line is chance ({v.chance:.2f}). At the last layer: {last}. A token "
        "whose curve rises carries the image's class.")
    notes = [] if v.k == v.k_requested else [f"k = {v.k}: {v.k_rule}."]
    return Section(title, "Where does class information sit?", [fig], notes=notes)


def _knockout(title: str, v: KnockoutResult) -> Section:
    metrics = {m: [r[m] for r in v.table] for m in v.metrics}
    errors = {m: [r.get(f"{m}_std") for r in v.table] for m in v.metrics}
    labels = [r["condition"] for r in v.table]
    fig = FigureItem(
        knockout_figure(labels, metrics, errors),
        "Each panel is one task's score with the text→image attention edges removed in every "
        "layer and head: 'gate' = the gate only, 'image' = BOI and every image token with the "
        f"gate kept, 'random' = {v.random_k} random image tokens (mean over {v.repeats} "
        "draws, whiskers: spread), 'all' = every image-side key (a floor: text sees no image). "
        "'zero' zeroes attention weights after the softmax (the paper's code; rows are not "
        "renormalised), 'mask' removes the keys before it (rows renormalise). cider: CIDEr-D "
        "of greedy captions; vqa_accuracy: VQA accuracy; chi: label overlap of the last "
        "token after the last block; accuracy: the answer's first token among the class names.")
    table = Table(["condition", *v.metrics],
                  [[r["condition"], *(r[m] for m in v.metrics)] for r in v.table],
                  "Scores per condition (random: mean over draws).")
    return Section(title, "What does text lose without the gate, or without the image?",
                   [fig], [table], notes=[v.gate_note] if v.gate != "eoi" else [])


def _progressive(title: str, v: ProgressiveResult) -> Section:
    figures = [FigureItem(
        progressive_figure(v.curves, v.none, "chi"),
        f"The gate (or the image, gate kept) is cut only in the last w of {v.n_layers} "
        "layers; the curve is the label overlap χ of the last token after the last block "
        "(dotted: 'zero' mode, solid: 'mask'; w = 0 is the model without knockout). If cutting "
        "only the last few layers already costs as much as cutting all, the image is still read "
        "late; a curve that stays flat until w is large means it was read early.")]
    if v.none["accuracy"] is not None:
        figures.append(FigureItem(progressive_figure(v.curves, v.none, "accuracy"),
                                  "The same, measured by the accuracy of the answer's first "
                                  "token among the class names."))
    return Section(title, "How late in the network is the image still read?", figures)


def _patching(title: str, v: PatchingResult) -> Section:
    sweeps = {"residual at the gate, layer l only": v.resid,
              "attention input at the gate, layers l..L-1": v.attn}
    flips = np.array(v.resid["flip_rate"])
    fig = FigureItem(
        patching_figure(v.layers, sweeps),
        f"{v.pairs} pairs of images of different classes: the source's activation at the "
        "gate is written into the target's run (blue: the residual entering layer l; orange: "
        "the attention input of layers l to the last). Left: fraction of pairs whose logit "
        "difference (target class − source class, first tokens) changes sign; middle: that "
        "difference (clean: "
        f"{v.ld_clean:.2f}); right: similarity Σ min(p, q) of the patched and the source's "
        f"next-token distributions (clean target vs source: {v.similarity_clean:.2f}). "
        f"Residual patching flips up to {flips.max():.0%} (the paper: 85-89% in Chameleon-7B's "
        "layers 10-22).")
    return Section(title, "Does the gate alone carry what the image is?", [fig],
                   notes=[v.gate_note] if v.gate != "eoi" else [])


def _steering(title: str, v: SteeringResult) -> Section:
    fig = FigureItem(
        steering_figure(v.scales, v.layers, v.flip_toward_target, v.target_wins),
        f"Each of {v.n} labelled images gets, at the gate after block l, scale × (mean gate "
        "vector of a target class − mean of its own class) added (class means over the same "
        "images). Solid: fraction of the images not already preferring the target "
        f"({v.n_below}) whose target-class logit overtakes their own class's; dotted: "
        "fraction where the target class's first token beats the own class's. Scale 0 is the "
        "unsteered model.")
    return Section(title, "Can the gate be steered toward another class?", [fig],
                   notes=[v.gate_note] if v.gate != "eoi" else [])


_SECTIONS: list[tuple[Any, Callable[[str, Any], Section]]] = [
    (GAP, _gap), (FLOW, _flow), (OVERLAP, _overlap), (KNOCKOUT, _knockout),
    (PROGRESSIVE, _progressive), (PATCHING, _patching), (STEERING, _steering),
]
