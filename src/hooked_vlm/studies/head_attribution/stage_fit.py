"""Stage 2, fit: y ≈ β0 + Σ β_h m_h per example and pooled, scored on the held-out masks.

Reads the finished store (``hooked_vlm.attribution.fit_store``); writes the coefficients
(per example, pooled, per class mean), the held-out predictions against the measured targets,
the clean and all-ablated targets, and the held-out Pearson / Spearman / R². The per-example
coefficients are a ranking of the heads (:meth:`FitResult.head_scores`), which the later stages
compare with the others.

Example:
    >>> FIT.reduce(session, session.mask_store).quality["pooled_pearson"]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hooked_vlm.attribution import MaskStore, fit_store, ranking, stored_splits
from hooked_vlm.studies.head_attribution.config import runs_with
from hooked_vlm.studies.head_attribution.session import HeadAttributionSession as Session
from hooked_vlm.studies.study import Result, Stage, fmt

TOP_HEADS = 10  # listed in the results and the summary


def top_head_list(scores: np.ndarray, n: int = TOP_HEADS) -> list[dict[str, Any]]:
    """The ``n`` highest-scoring heads of ``scores [L, H]``: layer, head, score."""
    n_heads = scores.shape[1]
    return [{"layer": int(i // n_heads), "head": int(i % n_heads), "score": float(scores.flat[i])}
            for i in ranking(scores)[:n]]


def head_name(entry: dict[str, Any]) -> str:
    return f"L{entry['layer']}H{entry['head']}"


@dataclass
class FitResult(Result):
    """The linear fit: coefficients per example (``coef [n, L, H]``), pooled and per class,
    the clean and all-ablated targets, and the held-out predictions and scores (``quality``:
    None without held-out masks)."""

    STAGE = "fit"
    regression: str
    regularization: float | None
    n_layers: int
    n_heads: int
    n: int
    classes: list[str]
    class_counts: list[int]
    pooled_intercept: float
    top_heads: list[dict[str, Any]]
    clean_mean: float
    ablated_mean: float
    quality: dict[str, float | None] | None
    coef: np.ndarray
    intercept: np.ndarray
    pooled_coef: np.ndarray
    class_coef: np.ndarray
    clean: np.ndarray
    ablated: np.ndarray
    heldout_predicted: np.ndarray | None = None
    heldout_measured: np.ndarray | None = None
    heldout_predicted_each: np.ndarray | None = None
    heldout_measured_each: np.ndarray | None = None
    pearson: np.ndarray | None = None
    spearman: np.ndarray | None = None
    r2: np.ndarray | None = None

    def head_scores(self) -> dict[str, np.ndarray]:
        """The rankings this stage gives, per example ``[n, L, H]``."""
        return {"attribution": self.coef}

    def headline(self) -> list[tuple[str, str]]:
        top = ", ".join(f"{head_name(h)} ({h['score']:+.3g})" for h in self.top_heads[:5])
        rows = [("top heads (pooled β)", top)]
        q = self.quality
        if q is not None:
            rows += [
                ("held-out Pearson / Spearman / R², pooled",
                 f"{fmt(q['pooled_pearson'])} / {fmt(q['pooled_spearman'])} / "
                 f"{fmt(q['pooled_r2'])} ({q['n_heldout']} masks)"),
                ("held-out Pearson / R², per example (mean)",
                 f"{fmt(q['pearson_mean'])} / {fmt(q['r2_mean'])}"),
            ]
        return rows


def _reduce(session: Session, store: MaskStore) -> FitResult:
    config = session.config
    attribution, quality = fit_store(store, config.regression, config.regularization)
    reference = store.targets("reference")  # [n, 2]: all kept, all ablated
    classes = sorted(set(session.labels))
    labels = np.array(session.labels)
    arrays = {
        "coef": attribution.coef, "intercept": attribution.intercept,
        "pooled_coef": attribution.pooled_coef,
        "class_coef": np.stack([attribution.coef[labels == c].mean(0) for c in classes]),
        "clean": reference[:, 0], "ablated": reference[:, 1],
    }
    values: dict[str, Any] = {
        "regression": attribution.method, "regularization": attribution.regularization,
        "n_layers": session.n_layers, "n_heads": session.n_heads, "n": session.n_examples,
        "classes": classes, "class_counts": [int((labels == c).sum()) for c in classes],
        "pooled_intercept": attribution.pooled_intercept,
        "top_heads": top_head_list(attribution.pooled_coef),
        "clean_mean": float(reference[:, 0].mean()), "ablated_mean": float(reference[:, 1].mean()),
        "quality": None,
    }
    if quality is not None:
        held = stored_splits(store)["heldout"]
        masks = held.masks(0, held.size)
        measured = store.targets("heldout")
        arrays.update({
            "heldout_predicted": attribution.predict_pooled(masks),
            "heldout_measured": measured.mean(0),
            "heldout_predicted_each": attribution.predict(masks),
            "heldout_measured_each": measured,
            "pearson": quality.pearson, "spearman": quality.spearman, "r2": quality.r2,
        })
        values["quality"] = _finite(quality.summary())
    return FitResult(**values, **arrays)


def _finite(values: dict[str, float]) -> dict[str, float | None]:
    """NaN (a constant target) as None, which JSON can hold."""
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
            for k, v in values.items()}


FIT = Stage("fit", "2. Fit and held-out quality", reduce=_reduce, result=FitResult,
            needs=("masks",), store=lambda session: session.mask_store,
            skip=runs_with("regression", "both"))
