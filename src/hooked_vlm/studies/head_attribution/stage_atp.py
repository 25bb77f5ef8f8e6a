"""Stages 4 and 5: attribution patching, and how it agrees with the regression.

Stage 4, atp (``method`` atp or both): every head's estimated effect under the run's own
ablation, baseline and target (``hooked_vlm.attribution.attribution_patching``) from one clean
forward, one baseline forward and one backward per example: AtP (linear) and AtP* (the ablated
attention recomputed exactly for every head, or for the ``atp_recompute`` largest). One unit
per example; the per-text-position and per-image-token estimates stay in the units.

Stage 5, compare (``method`` both): AtP and AtP* against the regression's β and against
leave-one-out (the quantity AtP estimates): Spearman over heads, pooled and per example, and
the share of the top-k heads two rankings have in common, for each k of the curves.

Example:
    >>> ATP.reduce(session, session.units).pooled("corrected")        # [L, H]
    >>> COMPARE.reduce(session, session.units).spearman["AtP* / β"]["pooled_spearman"]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hooked_vlm.attribution import AtPExample, attribution_patching, ranking
from hooked_vlm.storage import Store
from hooked_vlm.studies.head_attribution.config import runs_with
from hooked_vlm.studies.head_attribution.session import HeadAttributionSession as Session
from hooked_vlm.studies.head_attribution.stage_baselines import BaselinesResult, agreement
from hooked_vlm.studies.head_attribution.stage_fit import FitResult, head_name, top_head_list
from hooked_vlm.studies.session import key_index, stacked
from hooked_vlm.studies.study import Result, Stage, fmt

ESTIMATES = {"linear": "AtP", "corrected": "AtP*"}


def atp_of(session: Session, example: int) -> AtPExample:
    """AtP and AtP* of every head on one example (what a unit of this stage stores)."""
    return attribution_patching(session.evaluator, [example],
                                session.config.atp_recompute).examples[0]


def _keys(session: Session) -> list[str]:
    return [f"atp/{i:04d}" for i in range(session.n_examples)]


def _compute(session: Session, key: str) -> dict[str, np.ndarray]:
    est = atp_of(session, key_index(key))
    out = {"recomputed": est.recomputed[None], "clean": np.array([est.clean]),
           "query_positions": est.query_positions, "key_positions": est.key_positions}
    for estimate in ESTIMATES:
        out[estimate] = est.heads[estimate][None]
        out[f"query_{estimate}"] = est.queries[estimate]
        out[f"key_{estimate}"] = est.keys[estimate]
    return out


@dataclass
class AtPResult(Result):
    """Per example ``[n, L, H]``: AtP (``linear``) and AtP* (``corrected``) estimated drops
    y(clean) − y(head ablated); which heads AtP* recomputed; the clean targets."""

    STAGE = "atp"
    mode: str
    recompute: int | None
    n_recomputed: list[int]
    top_heads: list[dict[str, Any]]
    linear: np.ndarray
    corrected: np.ndarray
    recomputed: np.ndarray
    clean: np.ndarray

    def pooled(self, estimate: str = "corrected") -> np.ndarray:
        """The mean over examples ``[L, H]`` of ``"linear"`` or ``"corrected"``."""
        return getattr(self, estimate).mean(0)

    def head_scores(self) -> dict[str, np.ndarray]:
        """The rankings this stage gives, per example ``[n, L, H]``."""
        return {"atp": self.linear, "atp_star": self.corrected}

    def headline(self) -> list[tuple[str, str]]:
        top = ", ".join(f"{head_name(h)} ({h['score']:+.3g})" for h in self.top_heads[:5])
        low, high = min(self.n_recomputed), max(self.n_recomputed)
        return [("top heads (pooled AtP*)", top),
                ("heads AtP* recomputed per example",
                 f"{low}{'' if low == high else f' to {high}'} of {self.linear[0].size}")]


def _reduce(session: Session, store: Store) -> AtPResult:
    keys = _keys(session)
    linear, corrected = stacked(store, keys, "linear"), stacked(store, keys, "corrected")
    recomputed = stacked(store, keys, "recomputed")
    return AtPResult(
        mode=session.config.attribution.mode, recompute=session.config.atp_recompute,
        n_recomputed=[int(r.sum()) for r in recomputed],
        top_heads=top_head_list(corrected.mean(0)), linear=linear, corrected=corrected,
        recomputed=recomputed, clean=stacked(store, keys, "clean"))


@dataclass
class CompareResult(Result):
    """Agreement of two rankings (``"AtP* / β"``, ...): ``spearman`` (per example, mean and
    pooled, as the baselines stage computes it) and ``overlap`` (share of common top-k heads
    for each of ``ks``: ``pooled`` from the example means, ``mean`` over examples)."""

    STAGE = "compare"
    ks: list[int]
    spearman: dict[str, dict[str, Any]]
    overlap: dict[str, dict[str, list[float]]]

    def headline(self) -> list[tuple[str, str]]:
        return [(f"Spearman({pair}), pooled / per example",
                 f"{fmt(v['pooled_spearman'])} / {fmt(v['spearman_mean'])}")
                for pair, v in self.spearman.items() if "β" in pair]


def top_k_overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Share of the ``k`` highest-scoring heads that two score arrays ``[L, H]`` share."""
    return len(set(ranking(a)[:k]) & set(ranking(b)[:k])) / k


def _compare(session: Session, store: Store) -> CompareResult:
    atp = session.result(AtPResult)
    others = {"β": session.result(FitResult).coef}
    loo = session.result(BaselinesResult).loo
    if loo is not None:
        others["leave-one-out"] = loo
    pairs = {f"{ESTIMATES[e]} / {name}": (getattr(atp, e), scores)
             for name, scores in others.items() for e in ESTIMATES}
    if loo is not None:
        pairs["leave-one-out / β"] = (loo, others["β"])
    ks = session.ks
    return CompareResult(
        ks=ks, spearman={pair: agreement(a, b) for pair, (a, b) in pairs.items()},
        overlap={pair: {
            "pooled": [top_k_overlap(a.mean(0), b.mean(0), k) for k in ks],
            "mean": [float(np.mean([top_k_overlap(x, y, k) for x, y in zip(a, b, strict=True)]))
                     for k in ks],
        } for pair, (a, b) in pairs.items()})


ATP = Stage("atp", "4. Attribution patching (AtP, AtP*)", _keys, _compute, _reduce, AtPResult,
            skip=runs_with("atp", "both"), gradients=True)
COMPARE = Stage("compare", "5. AtP against the regression and leave-one-out", reduce=_compare,
                result=CompareResult, needs=("fit", "baselines", "atp"), skip=runs_with("both"))
