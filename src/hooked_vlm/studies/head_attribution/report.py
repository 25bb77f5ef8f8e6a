"""The head-attribution report: one HTML page from a results directory (no model needed).

``write_report(out_dir)`` reads ``config.json``, ``session.json``, the timings and
``results/<stage>.json|npz`` and draws a section per finished stage, each figure with a caption
in plain words that ends with the run's settings and fit figures (alpha, N, regression,
held-out correlation: Kim et al. publish none of them, so every result here carries its own).

Example:
    >>> write_report("results/ha")
    PosixPath('results/ha/report.html')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hooked_vlm.studies.head_attribution.config import STAGES, HeadAttributionConfig
from hooked_vlm.studies.head_attribution.stage_atp import AtPResult, CompareResult
from hooked_vlm.studies.head_attribution.stage_baselines import BaselinesResult
from hooked_vlm.studies.head_attribution.stage_consistency import ConsistencyResult
from hooked_vlm.studies.head_attribution.stage_curves import CurvesResult
from hooked_vlm.studies.head_attribution.stage_fit import FitResult, head_name
from hooked_vlm.studies.head_attribution.stage_tokens import TokensResult
from hooked_vlm.studies.report import model_line, run_facts, write_page
from hooked_vlm.studies.study import fmt
from hooked_vlm.viz import attention_on_image_grid
from hooked_vlm.viz.head_attribution import (
    agreement_figure,
    consistency_figure,
    curves_figure,
    head_heatmaps,
    heldout_figure,
    layer_profile_figure,
    position_figure,
    topk_figure,
)
from hooked_vlm.viz.report import FigureItem, Section, Table

HELDOUT_EXAMPLES = 4  # examples drawn one by one in the held-out scatter
REPORT_WIDTH = 1100  # pixels: figures with a fixed size fit the page's column


def write_report(out_dir: str | Path) -> Path:
    """Draw ``out_dir/report.html`` from the results written so far; returns its path."""
    root = Path(out_dir)
    identity, info = run_facts(root)
    config = HeadAttributionConfig.from_dict(
        {k: v for k, v in identity.items() if k not in ("study", "schema", "fingerprint")})
    fit, atp = FitResult.load(root), AtPResult.load(root)
    tag = _settings(config, fit)
    sections = []
    if fit is not None:
        sections += [_attribution(fit, info, tag), _quality(fit, tag)]
        baselines = BaselinesResult.load(root)
        if baselines is not None:
            sections.append(_baselines(baselines, fit, tag))
    if atp is not None:
        sections.append(_atp(atp, CompareResult.load(root), fit, BaselinesResult.load(root),
                             _atp_settings(config, atp)))
    curves = CurvesResult.load(root)
    if curves is not None:  # the regression's rankings, AtP's or both
        sections.append(_curves(curves, tag if fit is not None or atp is None
                                   else _atp_settings(config, atp)))
    if fit is not None:
        for kind, draw in ((TokensResult, _tokens), (ConsistencyResult, _consistency)):
            result = kind.load(root)
            if result is not None:
                sections.append(draw(result, fit, tag))
    return write_page(root, f"Head attribution: {info['model']}", _header(config, info, fit, atp),
                      sections, _intro(atp is not None), info.get("notes", []), STAGES)


# ---------------------------------------------------------------------- header


def _settings(config: HeadAttributionConfig, fit: FitResult | None) -> str:
    """The settings and fit figures every caption ends with."""
    a = config.attribution
    ablation = f"α = {a.alpha}" if a.alpha is not None else f"k = {a.k} heads"
    text = (f"[{ablation} per mask, N = {a.n_masks} masks (+{a.n_heldout} held "
            f"out) per example, {config.regression.upper()}")
    if fit is not None and fit.quality is not None:
        q = fit.quality
        text += (f"; held-out fit: Pearson {fmt(q['pooled_pearson'])}, R² {fmt(q['pooled_r2'])} "
                 f"pooled, Pearson {fmt(q['pearson_mean'])} per example")
    return text + "]"


def _atp_settings(config: HeadAttributionConfig, atp: AtPResult) -> str:
    """What every caption of the attribution-patching section ends with."""
    a = config.attribution
    low, high = min(atp.n_recomputed), max(atp.n_recomputed)
    recomputed = f"{low}" if low == high else f"{low}–{high}"
    return (f"[AtP: one clean forward, one baseline forward and one backward per example, "
            f"mode {a.mode}" + (f" ({a.baseline} baseline)" if a.mode == "baseline_kv" else "")
            + f", target {a.target}; AtP* recomputed {recomputed} of {atp.linear[0].size} heads "
            "per example]")


def _header(
    config: HeadAttributionConfig, info: dict, fit: FitResult | None, atp: AtPResult | None
) -> dict[str, Any]:
    ex = info["examples"]
    classes = sorted(set(ex["label"]))
    a = config.attribution
    ablation = (f"each head ablated with probability α = {a.alpha}"
                if a.alpha is not None else f"exactly k = {a.k} heads ablated")
    header = {
        "model": model_line(info, f"{info['n_layers']} layers x {info['n_heads']} heads = "
                            f"{info['n_layers'] * info['n_heads']} heads, {info['n_kv_heads']} "
                            f"KV heads, d_model {info['d_model']}"),
        "data": f"{info['data']}" + (f" (split {info['split']})" if info["split"] else "")
                + f", {len(ex['id'])} examples, {len(classes)} classes",
        "task and target": f"{info['task']}: prompt {info['prompt']!r}; target = "
                           f"{a.target} of the answer's first token at the last position",
        "masks": f"N = {a.n_masks} training + {a.n_heldout} held-out masks per "
                 f"example, {ablation}"
                 + ("; every head also ablated alone" if a.leave_one_out else ""),
        "ablation": f"mode {a.mode}"
                    + (f", baseline {a.baseline}" if a.mode == "baseline_kv" else "")
                    + f"; queries {a.queries} → keys {a.keys}",
        "regression": config.regression.upper()
                      + ("" if fit is None or fit.regularization is None
                         else f" (regularization {fit.regularization})"),
    }
    if fit is None and atp is not None:  # method atp: the masks and the fit never ran
        header["masks"] = header["regression"] = "not run (attribution patching only)"
    if atp is not None:
        header["attribution patching"] = (
            "AtP and AtP* (Kramár et al.'s exact attention for "
            + (f"the {config.atp_recompute} largest heads" if config.atp_recompute is not None
               else "every head") + ") under the same ablation and target")
    if fit is not None and fit.quality is not None:
        q = fit.quality
        header["held-out fit"] = (
            f"pooled Pearson {fmt(q['pooled_pearson'])}, Spearman {fmt(q['pooled_spearman'])}, "
            f"R² {fmt(q['pooled_r2'])}; per example mean Pearson {fmt(q['pearson_mean'])}, "
            f"R² {fmt(q['r2_mean'])} ({q['n_heldout']} fresh masks)")
    header["seed / device / dtype"] = f"{config.seed} / {info['device']} / {info['dtype']}"
    return header


def _intro(atp: bool) -> str:
    return ("Which attention heads carry image information to the text? Kim et al. (2025) "
            "ablate many random sets of heads at once (cutting each ablated head's view of the "
            "image), measure the answer's logit under each, and fit a linear model whose "
            "coefficients are the heads' attributions; single-head ablation misses heads that "
            "back each other up. Each section below repeats one of their analyses on this "
            "model." + (" Attribution patching estimates every head's single-head ablation "
                        "from one forward and one backward per example instead." if atp else ""))


# ---------------------------------------------------------------------- sections


def _attribution(v: FitResult, info: dict, tag: str) -> Section:
    figures = [FigureItem(
        head_heatmaps({"pooled": v.pooled_coef}, "Head attribution (pooled over "
                      "examples)"),
        "Each cell is one attention head (layer up, head across): its coefficient in the "
        "linear fit of the target on which heads were kept, fitted to the mean target over "
        f"{v.n} examples. Red: keeping the head raises the answer's logit (it carries image "
        "information the answer uses); blue: keeping it lowers the logit; white: no effect "
        f"the fit can see. The logit is {v.clean_mean:.3g} on average with every head and "
        f"{v.ablated_mean:.3g} with every head's image access cut. {tag}")]
    if len(v.classes) > 1:
        per_class = {f"{c} (n={n})": s for c, n, s in
                     zip(v.classes, v.class_counts, v.class_coef, strict=True)}
        figures.append(FigureItem(
            head_heatmaps(per_class, "Head attribution per class (mean of the examples' own "
                          "fits)"),
            "The same per class: the mean of each example's own coefficients over the examples "
            "of that class, on one colour scale. Kim et al. find that images of one category "
            f"use similar heads (section 'Semantic consistency' tests it). {tag}"))
    figures.append(FigureItem(
        layer_profile_figure({"pooled": v.pooled_coef,
                              **({f"class {c}": s for c, s in
                                  zip(v.classes, v.class_coef, strict=True)}
                                 if len(v.classes) > 1 else {})}),
        "Where in depth the heads that carry the image sit: per layer, the sum of the positive "
        f"coefficients (Kim et al.: mid-to-late layers). {tag}"))
    table = Table(["rank", "head", "layer", "head index", "coefficient"],
                  [[i + 1, head_name(h), h["layer"], h["head"], h["score"]]
                   for i, h in enumerate(v.top_heads)],
                  "The highest pooled attributions.")
    return Section("Head attributions", "Which heads carry image information to the answer? "
                   + tag, figures, [table])


def _quality(v: FitResult, tag: str) -> Section:
    if v.quality is None:
        return Section("Fit quality", "No held-out masks in this run (heldout = 0): the fit "
                       "is not scored. " + tag)
    n = min(HELDOUT_EXAMPLES, len(v.heldout_measured_each))
    each = {f"example {i}": (v.heldout_predicted_each[i],
                             v.heldout_measured_each[i]) for i in range(n)}
    fig = FigureItem(
        heldout_figure(v.heldout_predicted, v.heldout_measured, each),
        f"Fresh random masks the fit never saw ({v.quality['n_heldout']} of them, drawn like "
        "the training masks): the measured target against the linear fit's prediction. Left: "
        "the target averaged over examples (the pooled fit); right: the first examples, each "
        "with its own fit. Points on the dashed line are predicted exactly; a cloud along it "
        "means the heads' effects add up (the linear model holds), a flat cloud that it "
        f"does not. {tag}")
    q = v.quality
    table = Table(["", "Pearson", "Spearman", "R²"], [
        ["pooled (example-mean target)", q["pooled_pearson"], q["pooled_spearman"],
         q["pooled_r2"]],
        ["per example, mean", q["pearson_mean"], q["spearman_mean"], q["r2_mean"]],
        ["per example, median", q["pearson_median"], q["spearman_median"], q["r2_median"]],
    ], "Held-out agreement of prediction and measurement (R² < 0: worse than predicting the "
       "held-out mean).")
    return Section("Fit quality", "Does the linear model predict the target under masks it was "
                   "not fitted on? " + tag, [fig], [table])


def _baselines(v: BaselinesResult, fit: FitResult, tag: str) -> Section:
    pooled = fit.pooled_coef
    others = {"attention weight on the image": v.attention.mean(0)}
    corr = {"attention weight on the image": v.attention_agreement["pooled_spearman"]}
    if v.loo is not None:
        others["leave-one-out drop"] = v.loo.mean(0)
        corr["leave-one-out drop"] = v.loo_agreement["pooled_spearman"]
    fig = FigureItem(
        agreement_figure(pooled, others, corr),
        "One point per head (colour: layer): its pooled attribution against the attention "
        "weight its text queries put on the image tokens (left; mean over examples) and "
        "against the drop of the target when that head alone is ablated (right). Kim et al.: "
        "importance correlates poorly with attention weight, and leave-one-out misses heads "
        f"that back each other up. {tag}")
    rows = [[name, entry["pooled_spearman"], entry["pooled_pearson"], entry["spearman_mean"]]
            for name, entry in (("attention weight", v.attention_agreement),
                                ("leave-one-out", v.loo_agreement))
            if entry is not None]
    table = Table(["baseline", "Spearman, pooled", "Pearson, pooled",
                   "Spearman per example, mean"], rows,
                  "Agreement over heads of the attribution with each baseline.")
    return Section("Baselines: attention weight and leave-one-out", "Would a cheaper ranking "
                   "find the same heads? " + tag, [fig], [table])


def _atp(v: AtPResult, compare: CompareResult | None, fit: FitResult | None,
         baselines: BaselinesResult | None, tag: str) -> Section:
    figures = [FigureItem(
        head_heatmaps({"AtP*": v.pooled("corrected"), "AtP": v.pooled("linear")},
                      "Attribution patching (pooled over examples)", "estimated drop"),
        "Each cell is one head: the estimated drop of the target when that head alone is "
        "ablated (every other head kept: what leave-one-out measures), from the gradient of "
        "the target at the head's output (AtP*, left: the head's ablated attention recomputed "
        "exactly; AtP, right: linear through the softmax, which a saturated softmax defeats). "
        f"Mean over {len(v.linear)} examples. {tag}")]
    tables = [Table(["rank", "head", "AtP*", "AtP"],
                    [[i + 1, head_name(h), h["score"],
                      float(v.pooled("linear")[h["layer"], h["head"]])]
                     for i, h in enumerate(v.top_heads)],
                    "The highest pooled AtP* estimates.")]
    if compare is not None and fit is not None:
        others = {"β (regression)": fit.pooled_coef}
        corr = {"β (regression)": compare.spearman["AtP* / β"]["pooled_spearman"]}
        if baselines is not None and baselines.loo is not None:
            others["leave-one-out drop"] = baselines.loo.mean(0)
            corr["leave-one-out drop"] = compare.spearman["AtP* / leave-one-out"][
                "pooled_spearman"]
        figures.append(FigureItem(
            agreement_figure(v.pooled("corrected"), others, corr, name="AtP*"),
            "One point per head (colour: layer): its pooled AtP* estimate against the "
            "regression's pooled coefficient (left) and against the measured drop when it "
            "alone is ablated (right). AtP estimates the latter; β averages a head's effect "
            "over contexts in which many other heads are ablated too, so heads that back each "
            f"other up score higher in β than in AtP or leave-one-out. {tag}"))
        tables.append(Table(
            ["rankings", "Spearman, pooled", "Spearman per example, mean",
             *(f"top-{k} overlap, pooled" for k in compare.ks)],
            [[pair, entry["pooled_spearman"], entry["spearman_mean"],
              *compare.overlap[pair]["pooled"]] for pair, entry in compare.spearman.items()],
            "Agreement over heads; top-k overlap: the share of the k highest-scoring heads two "
            "rankings have in common (pooled scores)."))
    return Section("Attribution patching (AtP)", "Every head's single-head ablation, "
                   "estimated from one forward and one backward per example. " + tag,
                   figures, tables)


def _curves(v: CurvesResult, tag: str) -> Section:
    names = v.rankings
    summary = v.summary
    curves = FigureItem(
        curves_figure(v.ks, {names[n]: summary[n]["faithfulness"] for n in names},
                      {names[n]: summary[n]["completeness"] for n in names},
                      v.random_completeness),
        "Heads ranked by each method (per example); k counts heads over all layers. Left: "
        "only the top k keep their view of the image (every other head ablated): the share of "
        "the target (clean − all ablated) they restore. Right: only the top k are ablated: "
        "the share lost; dashed: k random heads. Shares are sums over examples of the "
        f"numerators over the sum of the gaps (mean gap {v.gap_mean:.3g}). A better "
        f"ranking rises faster on both. {tag}")
    bars = FigureItem(
        topk_figure(v.ks, {names[n]: summary[n]["topk_drop"] for n in names},
                    v.random_drop_mean, v.random_drop_std),
        f"Drop of the target (mean over {v.n} examples) when the top k heads of each ranking "
        f"are ablated, against k random heads ({v.n_random} draws per k, the same for every "
        "example; whisker: spread over examples). Top-k ablation must hurt more than random-k "
        f"for the ranking to mean something. {tag}")
    rows = [[k, *(summary[n]["topk_drop"][i] for n in names), v.random_drop_mean[i]]
            for i, k in enumerate(v.ks)]
    table = Table(["k", *(f"top k by {names[n]}" for n in names), "random k"], rows,
                  "Mean drop of the target per k.")
    notes = [] if v.gap_mean > 0 else [
        f"The target is not higher with the image than with every head's image access cut "
        f"(mean clean − all ablated = {v.gap_mean:.3g}): faithfulness and completeness, "
        "shares of that gap, do not mean what they should here; read the drops below."]
    return Section("Faithfulness, completeness, top-k against random-k",
                   "Do the top heads carry the image's information? " + tag, [curves, bars],
                   [table], notes=notes)


def _tokens(v: TokensResult, fit: FitResult, tag: str) -> Section:
    examples = v.examples
    heads = v.token_heads
    figures = []
    same = all(e["tokens"] == examples[0]["tokens"] for e in examples)
    groups = [examples] if same else [[e] for e in examples]
    for group in groups:
        scores = {f"example {e['example']} ({e['label'] or e['answer']})": e["text_scores"]
                  for e in group}
        figures.append(FigureItem(
            position_figure(group[0]["tokens"], scores,
                            f"Where image information enters the text (top {heads} heads)"),
            f"Each example's own top {heads} heads by attribution are cut from the image for "
            "one text position at a time (the others keep it); the bar is the drop of the "
            "target. Kim et al.: role tokens (\"ASSISTANT\") and the last token receive the "
            "image. Cutting every position at once drops it by "
            + ", ".join(f"{e['text_reference']:.3g}" for e in group) + f". {tag}"))
    if v.image_level:
        rows = [e["example"] for e in examples]
        pictures = [v.picture[str(i)] for i in rows]
        heats = np.stack([v.heat[str(i)] for i in rows])
        titles = [f"example {e['example']}: {e['label'] or e['answer']}" for e in examples]
        fig = attention_on_image_grid(pictures, heats, titles, title="Which image tokens "
                                      f"carry it (top {heads} heads)", fit=v.picture_fit,
                                      colorscale="RdBu_r", cmid=0.0, width=REPORT_WIDTH)
        figures.append(FigureItem(
            fig, f"Inside each example's top {heads} heads, {v.image_subsets} random subsets "
            f"of image tokens are cut (each token with probability {v.image_alpha}) for "
            "every text query, and a linear fit gives each image token a keep coefficient, "
            "drawn over its patch of the picture (one colour scale): red tokens carry what the "
            "answer uses. Kim et al.: a sparse set of object and some background tokens. "
            "Share of positive weight on the top 10% of tokens: "
            + ", ".join(f"{e['image_share_top']:.2f}" for e in examples) + f". {tag}"))
    table = Table(["example", "label / answer", "heads cut", "top text positions",
                   "image-token fit (held-out Pearson)"],
                  [[e["example"], e["label"] or e["answer"],
                    ", ".join(f"L{h[0]}H{h[1]}" for h in e["heads"]), ", ".join(e["top_text"]),
                    (e.get("image_quality") or {}).get("pearson")] for e in examples],
                  "Per example: the heads cut, the text positions whose cut hurts most, and "
                  f"the held-out quality of the image-token fit ({v.image_heldout} fresh "
                  "subsets).")
    notes = [] if v.image_level else [
        f"mode {v.mode!r} ablates head outputs, not keys: image tokens cannot be cut one by "
        "one, so the image-token analysis is not run (use baseline_kv or knockout)."]
    return Section("Token level", "Which text positions receive the image, and which image "
                   "tokens carry it? " + tag, figures, [table], notes=notes)


def _consistency(v: ConsistencyResult, fit: FitResult, tag: str) -> Section:
    if v.skipped:
        return Section("Semantic consistency", tag, notes=[f"not run: {v.skipped}"])
    fig = FigureItem(
        consistency_figure(v.similarity, v.order_labels, v.within, v.across,
                           v.per_class, v.metric),
        f"{v.metric.capitalize()} similarity of the examples' attribution vectors (every "
        "head's coefficient), sorted by class (left), and its mean over pairs of the same "
        f"class against pairs of different classes (right). Within − across = "
        f"{v.difference:.3f}, p = {v.p_value:.3g} ({v.n_permutations} label "
        f"permutations; one-sided). {tag}")
    table = Table(["class", "examples", "mean within-class similarity"],
                  [[c, v.counts[c], v.per_class.get(c)] for c in v.counts],
                  "Classes with one example have no within-class pair.")
    return Section("Semantic consistency", "Do images of one class use similar heads? " + tag,
                   [fig], [table])
