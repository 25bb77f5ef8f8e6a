"""The paper's native-vs-LLM-backed contrast, read from finished study results directories.

Pure reading: every number here was computed and saved by a study (its typed stage results,
``results/<stage>.json``); nothing is recomputed, so the demo page and the study reports can
never disagree.

Example:
    >>> row = narrow_gate_row("results/demo/narrow-gate/tiny-native")
    >>> row["gate_share"]["max"], row["knockout"]["vqa_accuracy"]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from hooked_vlm.studies.head_attribution.stage_baselines import BaselinesResult
from hooked_vlm.studies.head_attribution.stage_curves import CurvesResult
from hooked_vlm.studies.head_attribution.stage_fit import FitResult
from hooked_vlm.studies.narrow_gate.stage_flow import FlowResult
from hooked_vlm.studies.narrow_gate.stage_knockout import KnockoutResult
from hooked_vlm.studies.narrow_gate.stage_patching import PatchingResult, SteeringResult
from hooked_vlm.studies.narrow_gate.stage_representations import GapResult, OverlapResult
from hooked_vlm.studies.study import Result

R = TypeVar("R", bound=Result)

# knockout columns of the contrast: the paper's code zeroes post-softmax weights ("zero");
# "mask" (-inf before the softmax) is reported beside it
KNOCKOUT_MODE = "zero"
KNOCKOUT_MODES = ("zero", "mask")
KNOCKOUT_METRICS = {"accuracy": "classification accuracy", "vqa_accuracy": "VQA accuracy",
                    "cider": "CIDEr-D"}


def finished(kind: type[R], out_dir: str | Path) -> R:
    """The typed result of a finished stage of the study in ``out_dir``."""
    result = kind.load(out_dir)
    if result is None:
        raise FileNotFoundError(f"{Path(out_dir) / 'results' / kind.STAGE}.json is missing: "
                                f"stage {kind.STAGE!r} of {out_dir} has not finished; run the "
                                "study again to resume it")
    return result


def narrow_gate_row(out_dir: str | Path) -> dict[str, Any]:
    """One model's contrast numbers from its Narrow Gate results directory.

    ``gate_share``: share of text->image attention on the gate (EOI, or the last image token
    for a model without one) per layer, its max and that layer; ``knockout``: per metric, the
    clean value and the values with text->gate and text->image-tokens edges knocked out in
    every layer (mode :data:`KNOCKOUT_MODE`; ``all``: every image-side key, None where that
    condition did not run), ``knockouts`` the same per mode of
    :data:`KNOCKOUT_MODES` that ran, and ``relative`` each knocked-out value over the clean one
    (the paper's Fig. 1, right); ``patching``: the max flip rate of the gate's residual patched
    from an image of another class, and its layer; ``overlap``: chi of the gate residual with
    the class labels at the last layer (and chance); ``gap``: the largest median cosine of a
    text and an image token over layers; ``steering``: the largest share of answers steered
    toward the target class. Stages that did not run give None.
    """
    session = json.loads((Path(out_dir) / "session.json").read_text())
    flow = finished(FlowResult, out_dir)
    knock = finished(KnockoutResult, out_dir)
    patch = finished(PatchingResult, out_dir)
    share = flow.eoi if flow.has_eoi else flow.last_image
    by_condition = {row["condition"]: row for row in knock.table}
    knockouts = {
        mode: {
            metric: {"clean": by_condition["none"].get(metric),
                     "gate": by_condition[f"{mode}/gate"].get(metric),
                     "image": by_condition[f"{mode}/image"].get(metric),
                     "all": by_condition.get(f"{mode}/all", {}).get(metric)}
            for metric in KNOCKOUT_METRICS if by_condition["none"].get(metric) is not None
        }
        for mode in KNOCKOUT_MODES if f"{mode}/gate" in by_condition
    }
    relative = {mode: {metric: {cut: _ratio(v[cut], v["clean"]) for cut in ("gate", "image", "all")}
                       for metric, v in metrics.items()} for mode, metrics in knockouts.items()}
    flips = patch.resid["flip_rate"]
    best = _argmax(flips)
    return {
        "model": session["model"],
        "native": session["native"],
        "gate": "EOI" if flow.has_eoi else "last image token",
        "n": session["n"],
        "layers": flow.layers,
        "gate_share": {"per_layer": share, "max": max(share),
                       "layer": flow.layers[_argmax(share)],
                       "uniform": 1 / max(flow.n_keys, 1)},
        "knockout": knockouts.get(KNOCKOUT_MODE, {}),
        "knockouts": knockouts,
        "relative": relative,
        "patching": {"flip_rate": flips[best], "layer": patch.layers[best],
                     "pairs": patch.pairs, "per_layer": flips,
                     "attn_flip_rate": max(patch.attn["flip_rate"], default=None)},
        "overlap": _overlap(out_dir),
        "gap": _gap(out_dir),
        "steering": _steering(out_dir),
    }


def gate_vs_image_points(
    rows: dict[str, dict[str, Any]], mode: str, metric: str
) -> dict[str, tuple[float | None, float | None]]:
    """``{name: (gate, image)}``: per :func:`narrow_gate_row`, ``metric`` left with text->gate
    and with text->image-token edges cut (mode ``mode``) over clean: the paper's Fig. 1
    (right). A model whose row lacks them gets ``(None, None)`` (the figure skips it)."""
    points = {}
    for name, row in rows.items():
        cuts = row.get("relative", {}).get(mode, {}).get(metric) or {}
        points[name] = (cuts.get("gate"), cuts.get("image"))
    return points


def _ratio(value: float | None, clean: float | None) -> float | None:
    return None if value is None or not clean else value / clean


def _overlap(out_dir: str | Path) -> dict[str, Any] | None:
    overlap = OverlapResult.load(out_dir)
    if overlap is None:
        return None
    gate = next((name for name in ("eoi", "last_image") if name in overlap.chi), None)
    chi = overlap.chi[gate] if gate else None
    return {"gate_last": chi[-1] if chi else None, "gate_max": max(chi) if chi else None,
            "chance": overlap.chance, "k": overlap.k}


def _gap(out_dir: str | Path) -> dict[str, Any] | None:
    gap = GapResult.load(out_dir)
    if gap is None:
        return None
    median = gap.cosine["median"]
    return {"cosine_max": max(median), "layer": gap.layers[_argmax(median)]}


def _steering(out_dir: str | Path) -> dict[str, Any] | None:
    steering = SteeringResult.load(out_dir)
    if steering is None:
        return None
    flips = [v for row in steering.flip_toward_target for v in row if v is not None]
    return {"flip_toward_target": max(flips, default=None), "n": steering.n}


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def attribution_row(out_dir: str | Path, top: int = 3) -> dict[str, Any]:
    """One model's head-attribution headline from its results directory.

    ``fit``: held-out Pearson and R² of the pooled linear fit; ``top_heads``: the ``top``
    largest pooled coefficients; ``gap``: the mean target with every head kept and with every
    head ablated (how much the heads' image reading moves the answer at all); ``completeness``
    and ``random_drop`` per k: the share of that gap lost by ablating the top-k heads, and the
    drop of k random heads; ``agreement``: Spearman of the coefficients with leave-one-out
    drops and with attention weight on the image.
    """
    fit = finished(FitResult, out_dir)
    curves = finished(CurvesResult, out_dir)
    baselines = finished(BaselinesResult, out_dir)
    ours = curves.summary["attribution"]
    quality = fit.quality or {}
    agreement = {"loo": baselines.loo_agreement, "attention": baselines.attention_agreement}
    return {
        "n": fit.n,
        "fit": {"pearson": quality.get("pooled_pearson"), "r2": quality.get("pooled_r2"),
                "heldout_masks": quality.get("n_heldout")},
        "top_heads": fit.top_heads[:top],
        "gap": {"clean": fit.clean_mean, "ablated": fit.ablated_mean},
        "k": ours["k"],
        "completeness": ours["completeness"],
        "topk_drop": ours["topk_drop"],
        "random_drop": curves.random_drop_mean,
        "agreement": {name: entry["pooled_spearman"] for name, entry in agreement.items()
                      if entry is not None},
    }
