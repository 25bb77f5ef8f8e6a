"""The demo's page: the contrast table and figures, then links to every study's own report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hooked_vlm.storage import write_atomic
from hooked_vlm.studies.demo.config import DemoConfig
from hooked_vlm.studies.demo.contrast import (
    KNOCKOUT_METRICS,
    KNOCKOUT_MODE,
    KNOCKOUT_MODES,
    gate_vs_image_points,
)
from hooked_vlm.studies.study import fmt
from hooked_vlm.viz.demo import (
    gate_share_figure,
    gate_vs_image_figure,
    knockout_contrast_figure,
    topk_share_figure,
)
from hooked_vlm.viz.report import FigureItem, Section, Table, report_html

INTRO = (
    "Serra et al. (\"The Narrow Gate\") find that in native multimodal models (Chameleon, "
    "Emu3) text reads the image mostly through the end-of-image token [EOI]: much of the "
    "text→image attention lands on it, knocking out text→[EOI] hurts about as much as knocking "
    "out the whole image, and patching [EOI]'s residual from another image changes the answer. "
    "LLM-backed models (LLaVA) have no such gate: information flows from many image tokens. "
    "This page runs both studies on small models trained here on synthetic shapes "
    "(tiny-native: a Chameleon trained as natively as we can here; tiny-gate: the same "
    "architecture trained so that the image can reach text only through EOI, the positive "
    "control the study must detect; tiny-llava: a LLaVA) and shows what they find, as found."
)


def contrast_table(rows: list[dict[str, Any]]) -> Table:
    """Metrics down, models across: the numbers the paper contrasts."""
    ng = [r["narrow_gate"] for r in rows]
    lines: list[list[Any]] = [
        ["kind", *("native" if r["native"] else "LLM-backed" for r in ng)],
        ["gate token", *(r["gate"] for r in ng)],
        ["max share of text→image attention on the gate (layer)",
         *(f"{r['gate_share']['max']:.3f} ({r['gate_share']['layer']})" for r in ng)],
    ]
    for metric, title in KNOCKOUT_METRICS.items():
        lines.append([f"{title}: clean / gate KO / image KO", *(
            " / ".join(f"{r['knockout'][metric][c]:.3f}" for c in ("clean", "gate", "image"))
            if metric in r["knockout"] else "–" for r in ng)])
    for mode in KNOCKOUT_MODES:
        lines.append([f"VQA accuracy left, relative to clean, mode {mode!r}: gate / image / all "
                      "cut", *(_relative(r, mode, "vqa_accuracy") for r in ng)])
    lines += [
        ["gate patching from another class: max flip rate (layer)",
         *(f"{r['patching']['flip_rate']:.3f} ({r['patching']['layer']})" for r in ng)],
        ["steering at the gate: max share of answers moved to the target class",
         *(fmt(r.get("steering") and r["steering"]["flip_toward_target"]) for r in ng)],
        ["χ of the gate's residual with the class, last layer (chance)", *(
            f"{fmt(r['overlap']['gate_last'])} ({r['overlap']['chance']:.2f})"
            if r.get("overlap") else "–" for r in ng)],
        ["modality gap: max median cosine of text and image tokens (layer)", *(
            f"{r['gap']['cosine_max']:.3f} ({r['gap']['layer']})" if r.get("gap") else "–"
            for r in ng)],
    ]
    return Table(["", *(r["model"] for r in ng)], lines,
                 f"Knockout (KO): text queries may not read the gate / the image tokens (gate "
                 f"kept) in any layer, mode {KNOCKOUT_MODE!r}. Examples per task: "
                 f"{', '.join(str(r['n']) for r in ng)}.")


def _relative(row: dict[str, Any], mode: str, metric: str) -> str:
    cuts = row.get("relative", {}).get(mode, {}).get(metric)
    return " / ".join(fmt(cuts.get(c)) for c in ("gate", "image", "all")) if cuts else "–"


def gate_vs_image(ng: dict[str, dict[str, Any]], mode: str) -> FigureItem:
    """The paper's Fig. 1 (right) for ``mode``: VQA left with the gate cut vs the image cut."""
    return FigureItem(
        gate_vs_image_figure(gate_vs_image_points(ng, mode, "vqa_accuracy"), "VQA accuracy",
                             mode),
        "The Narrow Gate paper's Fig. 1 (right) on these models: a model whose text reads the "
        "image through the gate sits top-left (little left with the gate cut, x; most left "
        "with the other image tokens cut, y); one that reads the image tokens sits "
        "bottom-right.")


def attribution_table(rows: list[dict[str, Any]]) -> Table:
    """Head attribution's headline per model: fit quality, top heads, top-k vs random-k."""
    ha = [r["head_attribution"] for r in rows]
    lines: list[list[Any]] = [
        ["held-out fit, pooled: Pearson / R²",
         *(f"{h['fit']['pearson']:.3f} / {h['fit']['r2']:.3f}" for h in ha)],
        ["top heads (pooled β)", *(", ".join(
            f"L{t['layer']}H{t['head']} ({t['score']:+.2f})" for t in h["top_heads"]) for h in ha)],
        ["target: all heads kept → all ablated",
         *(f"{h['gap']['clean']:.2f} → {h['gap']['ablated']:.2f}" for h in ha)],
    ]
    for i, k in enumerate(ha[0]["k"][:-1]):  # the last k is every head: 1 by definition
        lines.append([f"top-{k} / random-{k} heads: share of that drop", *(
            f"{h['completeness'][i]:.2f} / {h['random_drop'][i] / _gap(h):.2f}"
            if _moves(h) else "– (no drop to share)" for h in ha)])
    lines.append(["Spearman of β with leave-one-out / attention weight", *(
        " / ".join(f"{h['agreement'].get(n, float('nan')):.2f}" for n in ("loo", "attention"))
        for h in ha)])
    return Table(["", *(r["narrow_gate"]["model"] for r in rows)], lines,
                 "Target: the answer token's logit on classification prompts; heads ablated "
                 "by replacing their image keys and values with the mean (baseline_kv). "
                 f"Examples: {', '.join(str(h['n']) for h in ha)}.")


def _gap(h: dict[str, Any]) -> float:
    return h["gap"]["clean"] - h["gap"]["ablated"]


def _moves(h: dict[str, Any], tolerance: float = 1e-3) -> bool:
    """Whether ablating every head moves the target at all: shares of a drop of ~0 (a model
    whose text never reads the image tokens, e.g. tiny-gate) are noise, not findings."""
    return abs(_gap(h)) > tolerance * max(1.0, abs(h["gap"]["clean"]))


def write_demo_report(out_dir: Path, config: DemoConfig, rows: list[dict[str, Any]]) -> Path:
    """Draw ``out_dir/report.html``; returns its path."""
    ng = {r["narrow_gate"]["model"]: r["narrow_gate"] for r in rows}
    narrow = Section(
        "Narrow Gate: native vs LLM-backed",
        "Per model, from its Narrow Gate study (full report linked below).",
        [FigureItem(gate_share_figure(
            {m: (r["layers"], r["gate_share"]["per_layer"]) for m, r in ng.items()},
            {m: r["gate"] for m, r in ng.items()}),
            "Share of the text queries' attention to the image span that lands on the gate "
            "token (EOI; the last image token for a model without one), mean over examples."),
         FigureItem(knockout_contrast_figure({m: r["knockout"] for m, r in ng.items()},
                                             KNOCKOUT_METRICS),
                    "If text reads the image through the gate, the middle bar drops as far as "
                    "the right one; if it reads the image tokens, only the right one drops."),
         *(gate_vs_image(ng, mode) for mode in KNOCKOUT_MODES)],
        [contrast_table(rows)],
    )
    ha = {r["narrow_gate"]["model"]: r["head_attribution"] for r in rows}
    heads = Section(
        "Head attribution: which heads carry the image to the answer",
        "Per model, from its head-attribution study (Kim et al.; full report linked below): a "
        "linear fit of the answer logit over random head ablations, checked on held-out masks.",
        [FigureItem(topk_share_figure({
            m: (h["k"], h["completeness"], [d / _gap(h) for d in h["random_drop"]])
            for m, h in ha.items() if _moves(h)}),
            "1 = the drop of ablating every head at once. A ranking that finds the heads "
            "carrying the image reaches it with few heads; random heads stay near 0. A model "
            "whose answer does not move with every head ablated is left out (nothing to "
            "share).")],
        [attribution_table(rows)],
    )
    links = Section("Every study's full report", links=[
        (f"{study} on {row['narrow_gate']['model']}", href)
        for row in rows for study, href in row["reports"].items()
    ])
    header = {"models": ", ".join(config.models), "data": "synthetic shapes, held-out split",
              "seed": config.seed}
    page = report_html("hooked-vlm demo: the two studies on the embedded trained models",
                       header, [narrow, heads, links], intro=INTRO, details=config.identity())
    path = out_dir / "report.html"
    write_atomic(path, page)
    return path
