"""Stage 4, curves: faithfulness and completeness of the top-k heads of each ranking, and the
top-k ablation against random-k (``hooked_vlm.attribution.head_curves``), one unit per example.

Rankings, each per example: the attribution (its coefficients), leave-one-out (the drop when a
head alone is ablated; only when the store has it) and attention weight on the image. The
random-k heads are drawn once per k (seeded), the same for every example.

Example:
    >>> CURVES.reduce(session, store).values["summary"]["attribution"]["faithfulness"]
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from hooked_vlm.attribution import Curves, head_curves
from hooked_vlm.studies.head_attribution.session import Session
from hooked_vlm.studies.stages import Reduced, Stage
from hooked_vlm.studies.units import Unit, UnitStore

RANKINGS = {"attribution": "attribution", "loo": "leave-one-out", "attention": "attention weight"}


def _units(session: Session, store: UnitStore) -> list[Unit]:
    return [Unit(f"curves/{i:04d}", partial(_curves, session, i))
            for i in range(session.n_examples)]


def rankings(session: Session) -> dict[str, np.ndarray]:
    """Per-example head scores ``[n, L, H]`` of each ranking, by key of :data:`RANKINGS`."""
    _, fit = session.result("fit")
    _, base = session.result("baselines")
    out = {"attribution": fit["coef"], "attention": base["attention"]}
    if "loo" in base:
        out["loo"] = base["loo"]
    return {name: out[name] for name in RANKINGS if name in out}


def _curves(session: Session, example: int) -> dict[str, np.ndarray]:
    scores = {name: s[example : example + 1] for name, s in rankings(session).items()}
    curves = head_curves(session.evaluator.evaluate, [example], scores, session.ks,
                         session.config.n_random, session.config.seed)
    out = {"clean": curves.clean, "ablated": curves.ablated, "random_drop": curves.random_drop}
    for name in scores:
        out[f"faithfulness.{name}"] = curves.faithfulness[name]
        out[f"completeness.{name}"] = curves.completeness[name]
        out[f"topk_drop.{name}"] = curves.topk_drop[name]
    return out


def _reduce(session: Session, store: UnitStore) -> Reduced:
    loaded = [store.load(u.key) for u in _units(session, store)]
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
    summary = curves.summary()
    gap = float((curves.clean - curves.ablated).sum())
    random_completeness = (curves.random_drop.sum(0) / gap).tolist() if gap else None
    values: dict[str, Any] = {
        "ks": session.ks, "rankings": {n: RANKINGS[n] for n in names}, "summary": summary,
        "random_drop": curves.random_drop.mean(0).tolist(),
        "random_drop_std": curves.random_drop.std(0).tolist(),
        "random_completeness": random_completeness, "n_random": session.config.n_random,
        "gap_mean": gap / len(curves.clean), "n": len(curves.clean),
    }
    arrays = {"clean": curves.clean, "ablated": curves.ablated,
              "random_drop": curves.random_drop,
              **{f"topk_drop.{n}": curves.topk_drop[n] for n in names}}
    top = summary["attribution"]["topk_drop"]
    headline = [
        (f"k = {k}: drop, top-k / random-k",
         f"{top[i]:.3g} / {values['random_drop'][i]:.3g}")
        for i, k in enumerate(session.ks) if k in _shown(session.ks)
    ]
    return Reduced(values, headline, arrays)


def _shown(ks: list[int], most: int = 4) -> list[int]:
    """A few ks for the headline: evenly spaced over the list, the last (all heads) left out."""
    inner = ks[:-1] if len(ks) > 1 else ks
    picks = np.linspace(0, len(inner) - 1, min(most, len(inner))).round().astype(int)
    return [inner[i] for i in sorted(set(picks))]


CURVES = Stage("curves", "4. Faithfulness, completeness, top-k vs random-k", _units, _reduce)
