"""Stage 3, baselines: the rankings the attribution is compared against.

- attention weight: the mass of the ablated queries' attention on the image keys per head
  (``hooked_vlm.attribution.image_attention``, reduced inside the pattern hooks), one work unit
  per chunk of ``batch_size`` examples;
- leave-one-out: each head ablated alone, read from the store's ``loo`` split.

The reduction also measures how the attribution agrees with each (Kim et al.: importance
correlates poorly with attention weight): Spearman correlation over heads, per example and for
the pooled attribution against the example-mean baseline.

Example:
    >>> BASELINES.reduce(session, store).values["attention"]["pooled_spearman"]
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
from scipy.stats import pearsonr, spearmanr

from hooked_vlm.attribution import image_attention, leave_one_out_from_store
from hooked_vlm.studies.common import chunked
from hooked_vlm.studies.head_attribution.session import Session
from hooked_vlm.studies.stages import Reduced, Stage, stacked
from hooked_vlm.studies.units import Unit, UnitStore


def _units(session: Session, store: UnitStore) -> list[Unit]:
    return [Unit(f"attention/{j:04d}", partial(_attention, session, rows))
            for j, rows in enumerate(chunked(session.n_examples, session.config.batch_size))]


def _attention(session: Session, rows: range) -> dict[str, np.ndarray]:
    inputs = [session.examples[i].inputs for i in rows]
    return {"attention": image_attention(session.model, inputs, session.config.queries,
                                         session.config.keys)}


def agreement(attribution: np.ndarray, other: np.ndarray) -> dict[str, Any]:
    """Spearman (and Pearson) over heads of per-example ``[n, L, H]`` scores, and of the
    example means; NaN (constant scores) is kept as None."""
    a, b = attribution.reshape(len(attribution), -1), other.reshape(len(other), -1)
    each = [_corr(spearmanr, x, y) for x, y in zip(a, b, strict=True)]
    finite = [v for v in each if v is not None]
    return {
        "spearman_each": each,
        "spearman_mean": float(np.mean(finite)) if finite else None,
        "pooled_spearman": _corr(spearmanr, a.mean(0), b.mean(0)),
        "pooled_pearson": _corr(pearsonr, a.mean(0), b.mean(0)),
    }


def _corr(fn: Any, x: np.ndarray, y: np.ndarray) -> float | None:
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(fn(x, y).statistic)


def _reduce(session: Session, store: UnitStore) -> Reduced:
    _, fit = session.result("fit")
    coef = fit["coef"]
    attention = stacked(store, _units(session, store), "attention")
    arrays = {"attention": attention}
    values: dict[str, Any] = {"attention": agreement(coef, attention), "loo": None}
    if session.config.leave_one_out:
        arrays["loo"] = leave_one_out_from_store(session.store)
        values["loo"] = agreement(coef, arrays["loo"])
    headline = [("Spearman(β, attention weight), pooled / per example",
                 f"{_fmt(values['attention']['pooled_spearman'])} / "
                 f"{_fmt(values['attention']['spearman_mean'])}")]
    if values["loo"] is not None:
        headline.append(("Spearman(β, leave-one-out), pooled / per example",
                         f"{_fmt(values['loo']['pooled_spearman'])} / "
                         f"{_fmt(values['loo']['spearman_mean'])}"))
    return Reduced(values, headline, arrays)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


BASELINES = Stage("baselines", "3. Baselines: leave-one-out and attention weight", _units,
                  _reduce)
