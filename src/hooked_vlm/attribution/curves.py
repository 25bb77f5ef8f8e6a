"""Faithfulness and completeness of a head ranking, and top-k against random-k ablation.

For one example, with ``y(m)`` the target under keep-mask ``m``, ``y_clean = y(all kept)``,
``y_ablated = y(all ablated)``, ``gap = y_clean − y_ablated`` and ``T_k`` the ranking's top
``k`` heads:

- **faithfulness(k)** ``= (y(keep only T_k) − y_ablated) / gap``: how much of the clean target
  the top-k heads restore on their own (0 at k = 0, 1 when every head is kept);
- **completeness(k)** ``= (y_clean − y(ablate only T_k)) / gap``: how much of the target is lost
  when only the top-k heads are ablated (0 at k = 0, 1 when every head is ablated);
- **top-k drop** ``= y_clean − y(ablate only T_k)`` (completeness before normalising), against
  the **random-k drop**, the same with ``k`` heads drawn uniformly at random (averaged over
  ``n_random`` draws per k): a ranking worth having drops the target more than chance.

What Kim et al.'s wording leaves open, and what is chosen here: (1) "keeping" and "ablating" use
the run's ablation mode for every non-kept head, as in the attribution itself; (2) the curves
are normalised by each example's own gap; an example whose gap is 0 has no defined curve
(NaN), and :meth:`Curves.summary` averages numerators and gaps over examples before dividing
(a ratio of means, robust to small gaps) rather than averaging per-example ratios; (3) k counts
heads over all layers (one global ranking), and ties are broken by head index; (4) a ranking
may be shared by every example (scores ``[n_layers, n_heads]``) or per example
(``[n_examples, n_layers, n_heads]``); heads are ranked by score, highest first (rank
attribution by ``coef``, leave-one-out by drop, attention by mass).

Example:
    >>> curves = head_curves(evaluator.evaluate, range(20),
    ...                      {"attribution": fit.coef, "loo": loo, "attention": attn},
    ...                      ks=[1, 2, 4, 8, 16, 32], n_random=5)
    >>> curves.summary()["attribution"]["faithfulness"]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from hooked_vlm.attribution.masks import RandomMasks, ReferenceMasks

RANDOM_K_STREAM = 2  # a seed stream of its own: never the training or held-out masks

EvaluateFn = Callable[[int, np.ndarray], np.ndarray]


@dataclass
class Curves:
    """Per example and k: ``faithfulness`` / ``completeness`` / ``topk_drop`` per ranking name
    ``[n_examples, len(ks)]``; ``random_drop`` ``[n_examples, len(ks)]``; ``clean`` and
    ``ablated`` targets ``[n_examples]``."""

    ks: np.ndarray
    faithfulness: dict[str, np.ndarray]
    completeness: dict[str, np.ndarray]
    topk_drop: dict[str, np.ndarray]
    random_drop: np.ndarray
    clean: np.ndarray
    ablated: np.ndarray
    n_random: int

    def summary(self) -> dict[str, dict[str, list[float]]]:
        """Per ranking, curves over k as ratios of means over examples (see module docs), and
        the mean top-k and random-k drops."""
        gap = (self.clean - self.ablated).sum()
        out: dict[str, dict[str, list[float]]] = {}
        for name in self.faithfulness:
            kept = self.faithfulness[name] * (self.clean - self.ablated)[:, None]
            out[name] = {
                "k": self.ks.tolist(),
                "faithfulness": (np.nansum(kept, 0) / gap).tolist(),
                "completeness": (self.topk_drop[name].sum(0) / gap).tolist(),
                "topk_drop": self.topk_drop[name].mean(0).tolist(),
                "random_drop": self.random_drop.mean(0).tolist(),
            }
        return out


def ranking(scores: np.ndarray) -> np.ndarray:
    """Flat head indices (layer-major), highest score first; ties by index."""
    flat = np.asarray(scores, dtype=np.float64).reshape(*np.shape(scores)[:-2], -1)
    return np.argsort(-flat, axis=-1, kind="stable")


def head_curves(
    evaluate: EvaluateFn,
    examples: Iterable[int],
    rankings: Mapping[str, np.ndarray],
    ks: Sequence[int],
    n_random: int = 5,
    seed: int = 0,
) -> Curves:
    """Faithfulness, completeness, top-k and random-k drops for each named ranking's scores.

    ``evaluate(example, keep_masks [n, L, H]) -> targets [n]`` (e.g. ``Evaluator.evaluate``).
    """
    examples = list(examples)
    if not rankings:
        raise ValueError("give at least one ranking: {'name': scores [L, H] or [n, L, H]}.")
    shape = next(iter(rankings.values())).shape[-2:]
    n_layers, n_heads = shape
    ks_arr = np.asarray(ks, dtype=int)
    if ks_arr.ndim != 1 or (ks_arr < 0).any() or (ks_arr > n_layers * n_heads).any():
        raise ValueError(f"ks must be head counts in 0..{n_layers * n_heads}, got {list(ks)}.")
    orders = {}
    for name, scores in rankings.items():
        if scores.shape[-2:] != shape or scores.ndim not in (2, 3) or (
            scores.ndim == 3 and len(scores) != len(examples)
        ):
            raise ValueError(
                f"ranking {name!r} has shape {scores.shape}; need [{n_layers}, {n_heads}] or "
                f"[{len(examples)} examples, {n_layers}, {n_heads}]."
            )
        orders[name] = ranking(scores)
    reference = ReferenceMasks(n_layers, n_heads).masks(0, 2)
    random = np.concatenate([
        RandomMasks(n_layers, n_heads, n_random, alpha=None, k=int(k), seed=seed,
                    stream=RANDOM_K_STREAM).masks(0, n_random)
        for k in ks_arr
    ])
    per_example = {name: [] for name in orders}
    clean, ablated, random_drop = [], [], []
    for row, example in enumerate(examples):
        ranked = {n: o if o.ndim == 1 else o[row] for n, o in orders.items()}
        top = [_top_masks(order, ks_arr, n_layers, n_heads) for order in ranked.values()]
        y = evaluate(example, np.concatenate([reference, random, *top]))
        y_clean, y_ablated = y[0], y[1]
        clean.append(y_clean)
        ablated.append(y_ablated)
        cut = 2 + len(random)
        random_drop.append(y_clean - y[2:cut].reshape(len(ks_arr), n_random).mean(1))
        for i, name in enumerate(ranked):
            keep_top, ablate_top = y[cut + 2 * i * len(ks_arr):][: 2 * len(ks_arr)].reshape(2, -1)
            per_example[name].append((keep_top, ablate_top))
    clean_a, ablated_a = np.array(clean), np.array(ablated)
    gap = clean_a - ablated_a
    with np.errstate(divide="ignore", invalid="ignore"):
        safe = np.where(gap != 0, gap, np.nan)[:, None]
        faith = {n: (np.array([k for k, _ in v]) - ablated_a[:, None]) / safe
                 for n, v in per_example.items()}
        drops = {n: clean_a[:, None] - np.array([a for _, a in v]) for n, v in per_example.items()}
        complete = {n: d / safe for n, d in drops.items()}
    return Curves(ks_arr, faith, complete, drops, np.array(random_drop), clean_a, ablated_a,
                  n_random)


def _top_masks(order: np.ndarray, ks: np.ndarray, n_layers: int, n_heads: int) -> np.ndarray:
    """For each k: keep only the top k (first block), then ablate only the top k (second)."""
    keep_only = np.zeros((len(ks), n_layers * n_heads), dtype=bool)
    ablate_only = np.ones((len(ks), n_layers * n_heads), dtype=bool)
    for row, k in enumerate(ks):
        keep_only[row, order[:k]] = True
        ablate_only[row, order[:k]] = False
    return np.concatenate([keep_only, ablate_only]).reshape(-1, n_layers, n_heads)
