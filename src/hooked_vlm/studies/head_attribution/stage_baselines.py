"""Stage 3, baselines: the rankings the attribution is compared against.

- attention weight: the mass of the ablated queries' attention on the image keys per head
  (``hooked_vlm.attribution.image_attention``, reduced inside the pattern hooks), one work unit
  per chunk of ``batch_size`` examples;
- leave-one-out: each head ablated alone, read from the store's ``loo`` split.

The reduction also measures how the attribution agrees with each (Kim et al.: importance
correlates poorly with attention weight): Spearman correlation over heads, per example and for
the pooled attribution against the example-mean baseline.

Both are per-example head scores (:meth:`BaselinesResult.head_scores`), rankings the curves
stage compares with the attribution's.

Example:
    >>> BASELINES.reduce(session, session.units).attention_agreement["pooled_spearman"]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import pearsonr, spearmanr

from hooked_vlm.attribution import image_attention, leave_one_out_from_store
from hooked_vlm.storage import Store
from hooked_vlm.studies.head_attribution.config import runs_with
from hooked_vlm.studies.head_attribution.session import HeadAttributionSession as Session
from hooked_vlm.studies.head_attribution.stage_fit import FitResult
from hooked_vlm.studies.session import chunked, key_index, stacked
from hooked_vlm.studies.study import Result, Stage, fmt


def _chunks(session: Session) -> list[range]:
    return chunked(session.n_examples, session.config.attribution.batch_size)


def _keys(session: Session) -> list[str]:
    return [f"attention/{j:04d}" for j in range(len(_chunks(session)))]


def _attention(session: Session, key: str) -> dict[str, np.ndarray]:
    inputs = [session.examples[i].inputs for i in _chunks(session)[key_index(key)]]
    settings = session.config.attribution
    return {"attention": image_attention(session.model, inputs, settings.queries, settings.keys)}


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


@dataclass
class BaselinesResult(Result):
    """Per-example head scores ``[n, L, H]``: attention weight on the image and the
    leave-one-out drop (None without it), and their agreement with the attribution."""

    STAGE = "baselines"
    attention_agreement: dict[str, Any] = field(metadata={"name": "attention"})
    loo_agreement: dict[str, Any] | None = field(metadata={"name": "loo"})
    attention: np.ndarray
    loo: np.ndarray | None = None

    def head_scores(self) -> dict[str, np.ndarray]:
        """The rankings this stage gives, per example ``[n, L, H]``."""
        return {"attention": self.attention, **({"loo": self.loo} if self.loo is not None
                                                else {})}

    def headline(self) -> list[tuple[str, str]]:
        rows = [("Spearman(β, attention weight), pooled / per example",
                 f"{fmt(self.attention_agreement['pooled_spearman'])} / "
                 f"{fmt(self.attention_agreement['spearman_mean'])}")]
        if self.loo_agreement is not None:
            rows.append(("Spearman(β, leave-one-out), pooled / per example",
                         f"{fmt(self.loo_agreement['pooled_spearman'])} / "
                         f"{fmt(self.loo_agreement['spearman_mean'])}"))
        return rows


def _reduce(session: Session, store: Store) -> BaselinesResult:
    coef = session.result(FitResult).coef
    attention = stacked(store, _keys(session), "attention")
    loo = (leave_one_out_from_store(session.mask_store)
           if session.config.attribution.leave_one_out else None)
    return BaselinesResult(agreement(coef, attention),
                           None if loo is None else agreement(coef, loo), attention, loo)


BASELINES = Stage("baselines", "3. Baselines: leave-one-out and attention weight", _keys,
                  _attention, _reduce, BaselinesResult, needs=("fit",),
                  skip=runs_with("regression", "both"))
