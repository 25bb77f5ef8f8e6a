"""Stage 8, consistency: do images of one class use similar heads? (Kim et al.: yes.)

The per-example attribution vectors' similarity (``consistency_metric``) within classes
against across classes, with a label-permutation p-value
(``hooked_vlm.attribution.class_consistency``). Needs two classes and a class with two
examples; otherwise the stage records why it did not run.

Example:
    >>> CONSISTENCY.reduce(session, session.units).within
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hooked_vlm.attribution import class_consistency
from hooked_vlm.storage import Store
from hooked_vlm.studies.head_attribution.config import runs_with
from hooked_vlm.studies.head_attribution.session import HeadAttributionSession as Session
from hooked_vlm.studies.head_attribution.stage_fit import FitResult
from hooked_vlm.studies.study import Result, Stage


@dataclass
class ConsistencyResult(Result):
    """Similarity of attributions within against across classes, with a permutation p-value
    (``skipped``: why it was not computed, the other fields then None)."""

    STAGE = "consistency"
    skipped: str | None
    within: float | None = None
    across: float | None = None
    difference: float | None = None
    p_value: float | None = None
    per_class: dict[str, Any] | None = None
    counts: dict[str, int] | None = None
    metric: str | None = None
    n_permutations: int | None = None
    order_labels: list[str] | None = None
    similarity: np.ndarray | None = None

    def headline(self) -> list[tuple[str, str]]:
        if self.skipped:
            return [("class consistency", f"skipped: {self.skipped}")]
        return [(f"{self.metric} similarity of attributions within / across classes",
                 f"{self.within:.3f} / {self.across:.3f} (permutation p = {self.p_value:.3g})")]


def _reduce(session: Session, store: Store) -> ConsistencyResult:
    labels = np.array(session.labels)
    counts = {c: int((labels == c).sum()) for c in sorted(set(session.labels))}
    if len(counts) < 2 or max(counts.values()) < 2:
        reason = (f"needs two classes and a class with two examples; the labels are {counts}"
                  if any(session.labels) else "the data has no labels")
        return ConsistencyResult(reason)
    config = session.config
    result = class_consistency(session.result(FitResult).coef, session.labels,
                               config.consistency_metric, config.permutations, config.seed)
    order = np.argsort(labels, kind="stable")
    return ConsistencyResult(
        skipped=None, within=result.within, across=result.across,
        difference=result.difference, p_value=result.p_value,
        per_class={str(k): v for k, v in result.per_class.items()}, counts=counts,
        metric=result.metric, n_permutations=result.n_permutations,
        order_labels=labels[order].tolist(),
        similarity=result.similarity[np.ix_(order, order)])


CONSISTENCY = Stage("consistency", "8. Semantic consistency across classes", reduce=_reduce,
                    result=ConsistencyResult, needs=("fit",), skip=runs_with("regression", "both"))
