"""Stage 6, curves: faithfulness and completeness of the top-k heads of each ranking, and the
top-k ablation against random-k (``hooked_vlm.attribution.head_curves``), one unit per example.

Rankings, each per example, those of the stages the ``method`` runs: the attribution (its
coefficients), leave-one-out (the drop when a head alone is ablated; only when the store has
it) and attention weight on the image (regression, both); AtP and AtP* (atp, both). The
random-k heads are drawn once per k (seeded), the same for every example. A unit holds the
curves of its method's rankings; the method is part of the run's identity, so one results
directory never mixes units of two methods.

Another ranking method is another stage whose result has a ``head_scores()`` method (per
example ``[n, L, H]`` by ranking name): list its result in :data:`RANKING_RESULTS` under the
methods that run it, its name in :data:`RANKINGS` and the stage in the curves stage's
``needs``, and the curves, the table and the report compare it with the others.

Example:
    >>> CURVES.reduce(session, session.units).summary["attribution"]["faithfulness"]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hooked_vlm.attribution import Curves, head_curves
from hooked_vlm.storage import Store
from hooked_vlm.studies.head_attribution.session import HeadAttributionSession as Session
from hooked_vlm.studies.head_attribution.stage_atp import AtPResult
from hooked_vlm.studies.head_attribution.stage_baselines import BaselinesResult
from hooked_vlm.studies.head_attribution.stage_fit import FitResult
from hooked_vlm.studies.session import key_index
from hooked_vlm.studies.study import Result, Stage

RANKINGS = {"attribution": "attribution", "loo": "leave-one-out", "attention": "attention weight",
            "atp": "AtP", "atp_star": "AtP*"}
# the stages each method runs that rank heads
RANKING_RESULTS: dict[str, tuple[type[Any], ...]] = {
    "regression": (FitResult, BaselinesResult), "atp": (AtPResult,),
    "both": (FitResult, BaselinesResult, AtPResult)}


def _keys(session: Session) -> list[str]:
    return [f"curves/{i:04d}" for i in range(session.n_examples)]


def rankings(session: Session) -> dict[str, np.ndarray]:
    """Per-example head scores ``[n, L, H]`` of each ranking, by key of :data:`RANKINGS`."""
    out: dict[str, np.ndarray] = {}
    for kind in RANKING_RESULTS[session.config.method]:
        out.update(session.result(kind).head_scores())
    return {name: out[name] for name in RANKINGS if name in out}


def _curves(session: Session, key: str) -> dict[str, np.ndarray]:
    example = key_index(key)
    scores = {name: s[example : example + 1] for name, s in rankings(session).items()}
    curves = head_curves(session.evaluator.evaluate, [example], scores, session.ks,
                         session.config.n_random, session.config.seed)
    out = {"clean": curves.clean, "ablated": curves.ablated, "random_drop": curves.random_drop}
    for name in scores:
        out[f"faithfulness.{name}"] = curves.faithfulness[name]
        out[f"completeness.{name}"] = curves.completeness[name]
        out[f"topk_drop.{name}"] = curves.topk_drop[name]
    return out


@dataclass
class CurvesResult(Result):
    """Per ranking: faithfulness, completeness and the top-k drop per k (``summary``), the
    random-k drops, and the per-example arrays they come from."""

    STAGE = "curves"
    ks: list[int]
    rankings: dict[str, str]
    summary: dict[str, dict[str, list[float]]]
    random_drop_mean: list[float] = field(metadata={"name": "random_drop"})
    random_drop_std: list[float]
    random_completeness: list[float] | None
    n_random: int
    gap_mean: float
    n: int
    clean: np.ndarray
    ablated: np.ndarray
    random_drop: np.ndarray
    topk_drop: dict[str, np.ndarray]

    def headline(self) -> list[tuple[str, str]]:
        first = next(iter(self.rankings))  # the attribution, or AtP without the regression
        top = self.summary[first]["topk_drop"]
        by = "" if first == "attribution" else f" by {self.rankings[first]}"
        return [(f"k = {k}: drop, top-k{by} / random-k",
                 f"{top[i]:.3g} / {self.random_drop_mean[i]:.3g}")
                for i, k in enumerate(self.ks) if k in _shown(self.ks)]


def _reduce(session: Session, store: Store) -> CurvesResult:
    loaded = [store.load(key) for key in _keys(session)]
    names = [n for n in RANKINGS if f"topk_drop.{n}" in loaded[0]]

    def joined(key: str) -> np.ndarray:
        return np.concatenate([u[key] for u in loaded])

    curves = Curves(
        ks=np.array(session.ks),
        faithfulness={n: joined(f"faithfulness.{n}") for n in names},
        completeness={n: joined(f"completeness.{n}") for n in names},
        topk_drop={n: joined(f"topk_drop.{n}") for n in names},
        random_drop=joined("random_drop"), clean=joined("clean"), ablated=joined("ablated"),
        n_random=session.config.n_random,
    )
    gap = float((curves.clean - curves.ablated).sum())
    return CurvesResult(
        ks=session.ks, rankings={n: RANKINGS[n] for n in names}, summary=curves.summary(),
        random_drop_mean=curves.random_drop.mean(0).tolist(),
        random_drop_std=curves.random_drop.std(0).tolist(),
        random_completeness=(curves.random_drop.sum(0) / gap).tolist() if gap else None,
        n_random=session.config.n_random, gap_mean=gap / len(curves.clean),
        n=len(curves.clean), clean=curves.clean, ablated=curves.ablated,
        random_drop=curves.random_drop, topk_drop={n: curves.topk_drop[n] for n in names})


def _shown(ks: list[int], most: int = 4) -> list[int]:
    """A few ks for the headline: evenly spaced over the list, the last (all heads) left out."""
    inner = ks[:-1] if len(ks) > 1 else ks
    picks = np.linspace(0, len(inner) - 1, min(most, len(inner))).round().astype(int)
    return [inner[i] for i in sorted(set(picks))]


CURVES = Stage("curves", "6. Faithfulness, completeness, top-k vs random-k", _keys, _curves,
               _reduce, CurvesResult, needs=("fit", "baselines", "atp"))
