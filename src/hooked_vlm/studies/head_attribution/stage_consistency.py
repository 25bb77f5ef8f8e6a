"""Stage 6, consistency: do images of one class use similar heads? (Kim et al.: yes.)

The per-example attribution vectors' similarity (``consistency_metric``) within classes
against across classes, with a label-permutation p-value
(``hooked_vlm.attribution.class_consistency``). Needs two classes and a class with two
examples; otherwise the stage records why it did not run.

Example:
    >>> CONSISTENCY.reduce(session, store).values["within"]
"""

from __future__ import annotations

import numpy as np

from hooked_vlm.attribution import class_consistency
from hooked_vlm.studies.head_attribution.session import Session
from hooked_vlm.studies.stages import Reduced, Stage
from hooked_vlm.studies.units import UnitStore


def _reduce(session: Session, store: UnitStore) -> Reduced:
    _, fit = session.result("fit")
    labels = np.array(session.labels)
    counts = {c: int((labels == c).sum()) for c in sorted(set(session.labels))}
    if len(counts) < 2 or max(counts.values()) < 2:
        reason = (f"needs two classes and a class with two examples; the labels are {counts}"
                  if any(session.labels) else "the data has no labels")
        return Reduced({"skipped": reason}, [("class consistency", f"skipped: {reason}")])
    config = session.config
    result = class_consistency(fit["coef"], session.labels, config.consistency_metric,
                               config.permutations, config.seed)
    order = np.argsort(labels, kind="stable")
    values = {
        "skipped": None, "within": result.within, "across": result.across,
        "difference": result.difference, "p_value": result.p_value,
        "per_class": {str(k): v for k, v in result.per_class.items()}, "counts": counts,
        "metric": result.metric, "n_permutations": result.n_permutations,
        "order_labels": labels[order].tolist(),
    }
    arrays = {"similarity": result.similarity[np.ix_(order, order)]}
    headline = [(f"{result.metric} similarity of attributions within / across classes",
                 f"{result.within:.3f} / {result.across:.3f} (permutation p = "
                 f"{result.p_value:.3g})")]
    return Reduced(values, headline, arrays)


CONSISTENCY = Stage("consistency", "6. Semantic consistency across classes",
                    lambda session, store: [], _reduce)
