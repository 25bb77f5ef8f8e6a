"""Do images of one class use similar heads? Similarity of per-example attribution vectors
within classes against across classes (Kim et al.: same-category images share heads).

Similarity is cosine (``"cosine"``) or Pearson correlation (``"pearson"``: cosine of the
centred vectors) of the flattened attributions. ``within`` is the mean similarity over pairs of
distinct examples with the same label, ``across`` over pairs with different labels; the p-value
is a label-permutation test of ``within − across`` (one-sided, with the +1 correction).

Example:
    >>> result = class_consistency(attribution.coef, labels=[ex.label for ex in examples])
    >>> result.within, result.across, result.p_value
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

METRICS = ("cosine", "pearson")


@dataclass
class Consistency:
    """``within`` / ``across`` mean similarities, their ``difference`` and permutation
    ``p_value``, ``per_class`` within-class means, and the full ``similarity`` matrix."""

    within: float
    across: float
    difference: float
    p_value: float
    per_class: dict[Any, float]
    similarity: np.ndarray
    metric: str
    n_permutations: int


def similarity_matrix(attributions: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """Pairwise similarity ``[n, n]`` of per-example attributions ``[n, ...]``."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; accepted: {', '.join(METRICS)}.")
    x = np.asarray(attributions, dtype=np.float64).reshape(len(attributions), -1)
    if metric == "pearson":
        x = x - x.mean(1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    if (norm == 0).any():
        raise ValueError("an attribution vector is constant (all zero after centring): its "
                         "similarity is undefined.")
    x = x / norm
    return x @ x.T


def class_consistency(
    attributions: np.ndarray,
    labels: Sequence[Any],
    metric: str = "cosine",
    n_permutations: int = 1000,
    seed: int = 0,
) -> Consistency:
    """Within- vs across-class similarity of ``attributions [n_examples, ...]``.

    Example:
        >>> class_consistency(fit.coef, ["cat", "cat", "dog", "dog"]).difference
    """
    labels_arr = np.asarray(labels)
    if len(labels_arr) != len(attributions):
        raise ValueError(f"{len(labels_arr)} labels for {len(attributions)} attributions.")
    codes = np.unique(labels_arr, return_inverse=True)[1]
    counts = np.bincount(codes)
    if (counts >= 2).sum() < 1 or len(counts) < 2:
        raise ValueError("need at least two classes and one class with two or more examples.")
    sim = similarity_matrix(attributions, metric)
    off = ~np.eye(len(sim), dtype=bool)

    def within_across(c: np.ndarray) -> tuple[float, float]:
        same = (c[:, None] == c[None, :]) & off
        return float(sim[same].mean()), float(sim[~same & off].mean())

    within, across = within_across(codes)
    rng = np.random.default_rng(seed)
    null = np.array([np.subtract(*within_across(rng.permutation(codes)))
                     for _ in range(n_permutations)])
    p_value = float((1 + (null >= within - across).sum()) / (1 + n_permutations))
    per_class = {}
    for label in np.unique(labels_arr):
        idx = np.flatnonzero(labels_arr == label)
        if len(idx) >= 2:
            block = sim[np.ix_(idx, idx)]
            per_class[label.item() if hasattr(label, "item") else label] = float(
                block[~np.eye(len(idx), dtype=bool)].mean())
    return Consistency(within, across, within - across, p_value, per_class, sim, metric,
                       n_permutations)
