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
from hooked_vlm.studies.narrow_gate.stage_patching import PatchingResult
from hooked_vlm.studies.study import Result

R = TypeVar("R", bound=Result)

# knockout columns of the contrast: the paper's code zeroes post-softmax weights ("zero")
KNOCKOUT_MODE = "zero"
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
    every layer (mode :data:`KNOCKOUT_MODE`); ``patching``: the max flip rate of the gate's
    residual patched from an image of another class, and its layer.
    """
    session = json.loads((Path(out_dir) / "session.json").read_text())
    flow = finished(FlowResult, out_dir)
    knock = finished(KnockoutResult, out_dir)
    patch = finished(PatchingResult, out_dir)
    share = flow.eoi if flow.has_eoi else flow.last_image
    by_condition = {row["condition"]: row for row in knock.table}
    knockout = {
        metric: {
            "clean": by_condition["none"].get(metric),
            "gate": by_condition[f"{KNOCKOUT_MODE}/gate"].get(metric),
            "image": by_condition[f"{KNOCKOUT_MODE}/image"].get(metric),
        }
        for metric in KNOCKOUT_METRICS
        if by_condition["none"].get(metric) is not None
    }
    flips = patch.resid["flip_rate"]
    best = _argmax(flips)
    return {
        "model": session["model"],
        "native": session["native"],
        "gate": "EOI" if flow.has_eoi else "last image token",
        "n": session["n"],
        "layers": flow.layers,
        "gate_share": {"per_layer": share, "max": max(share),
                       "layer": flow.layers[_argmax(share)]},
        "knockout": knockout,
        "patching": {"flip_rate": flips[best], "layer": patch.layers[best],
                     "pairs": patch.pairs},
    }


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
