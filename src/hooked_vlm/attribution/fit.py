"""Fit y(m) ≈ β0 + Σ_h β_h m_h over keep-masks m, and score the fit on fresh masks.

β_h (head h's attribution) is the change of the target when head h is kept rather than ablated,
the other heads drawn at random. Regression by scikit-learn: ``"ols"`` (least squares with
intercept, COAR's default), ``"ridge"`` and ``"lasso"`` (``regularization`` is sklearn's
``alpha``: ridge ``||y − Xβ||² + a||β||²``, lasso ``||y − Xβ||²/(2N) + a||β||₁``).

Per example: one regression per example (a column of targets). Pooled: one regression of the
example-mean target (masks are shared across examples, so for OLS the pooled β is the mean of
the per-example β). Held-out scores on fresh masks, per example and pooled: Pearson and
Spearman correlation between predicted and measured targets, and R² (1 − SSE/SST; negative
when the fit predicts worse than the held-out mean).

The features may have any shape (``[N, n_layers, n_heads]`` for heads, ``[N, n_tokens]`` for
image tokens); coefficients come back in that shape.

Example:
    >>> attribution = fit_attribution(train_masks, train_targets, method="ols")
    >>> attribution.coef.shape                          # [n_examples, n_layers, n_heads]
    >>> quality = fit_quality(attribution, heldout_masks, heldout_targets)
    >>> quality.summary()["pooled_pearson"]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.linear_model import Lasso, LinearRegression, Ridge
from sklearn.metrics import r2_score

from hooked_vlm.attribution.config import AttributionConfig
from hooked_vlm.attribution.store import MaskStore

METHODS = ("ols", "ridge", "lasso")
DEFAULT_REGULARIZATION = {"ridge": 1.0, "lasso": 1e-3}


@dataclass
class Attribution:
    """Fitted coefficients: per example ``coef [n_examples, *features]`` and ``intercept
    [n_examples]``; pooled ``pooled_coef [*features]`` and ``pooled_intercept``."""

    coef: np.ndarray
    intercept: np.ndarray
    pooled_coef: np.ndarray
    pooled_intercept: float
    method: str
    regularization: float | None

    def predict(self, masks: np.ndarray) -> np.ndarray:
        """Predicted targets ``[n_examples, N]`` for keep-masks ``[N, *features]``."""
        x = _features(masks, self.coef.shape[1:])
        return self.intercept[:, None] + self.coef.reshape(len(self.coef), -1) @ x.T

    def predict_pooled(self, masks: np.ndarray) -> np.ndarray:
        x = _features(masks, self.pooled_coef.shape)
        return self.pooled_intercept + x @ self.pooled_coef.ravel()

    def describe(self) -> dict[str, Any]:
        return {"method": self.method, "regularization": self.regularization}


def fit_attribution(
    masks: np.ndarray,
    targets: np.ndarray,
    method: str = "ols",
    regularization: float | None = None,
) -> Attribution:
    """Regress ``targets [n_examples, N]`` on keep-masks ``masks [N, *features]``.

    Example:
        >>> fit_attribution(masks, y, method="lasso", regularization=1e-3).pooled_coef
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; accepted: {', '.join(METHODS)}.")
    if method == "ols" and regularization is not None:
        raise ValueError("method 'ols' takes no regularization (use 'ridge' or 'lasso').")
    targets = np.atleast_2d(np.asarray(targets, dtype=np.float64))
    shape = np.shape(masks)[1:]
    x = _features(masks, shape)
    if targets.shape[1] != x.shape[0] or not np.isfinite(targets).all():
        bad = "" if np.isfinite(targets).all() else " with NaN/inf (units missing?)"
        raise ValueError(
            f"targets must be finite, [n_examples, N] with N = {x.shape[0]} masks; got shape "
            f"{targets.shape}{bad}."
        )
    reg = regularization if regularization is not None else DEFAULT_REGULARIZATION.get(method)
    per = _regress(x, targets.T, method, reg)
    pooled = _regress(x, targets.mean(0, keepdims=True).T, method, reg)
    return Attribution(
        coef=per.coef_.reshape(len(targets), *shape),
        intercept=np.asarray(per.intercept_, dtype=np.float64).reshape(len(targets)),
        pooled_coef=pooled.coef_.reshape(shape),
        pooled_intercept=float(np.ravel(pooled.intercept_)[0]),
        method=method,
        regularization=reg,
    )


def _regress(x: np.ndarray, y: np.ndarray, method: str, reg: float | None) -> Any:
    model = {
        "ols": lambda: LinearRegression(),
        "ridge": lambda: Ridge(alpha=reg),
        "lasso": lambda: Lasso(alpha=reg, max_iter=10_000),
    }[method]()
    return model.fit(x, y if y.shape[1] > 1 else y[:, 0])


def _features(masks: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    masks = np.asarray(masks)
    if tuple(masks.shape[1:]) != tuple(shape):
        raise ValueError(f"masks must be [N, {', '.join(map(str, shape))}], got {masks.shape}.")
    return masks.reshape(len(masks), -1).astype(np.float64)


@dataclass
class FitQuality:
    """Held-out agreement: per example ``pearson``, ``spearman``, ``r2`` ``[n_examples]``, and
    ``pooled`` (the same three for the example-mean target)."""

    pearson: np.ndarray
    spearman: np.ndarray
    r2: np.ndarray
    pooled: dict[str, float]
    n_heldout: int

    def summary(self) -> dict[str, float]:
        """Mean and median of the per-example scores, and the pooled ones."""
        out: dict[str, float] = {"n_heldout": self.n_heldout}
        for name in ("pearson", "spearman", "r2"):
            values = getattr(self, name)
            out[f"{name}_mean"] = float(np.nanmean(values)) if np.isfinite(values).any() else np.nan
            out[f"{name}_median"] = (
                float(np.nanmedian(values)) if np.isfinite(values).any() else np.nan
            )
            out[f"pooled_{name}"] = self.pooled[name]
        return out


def fit_quality(attribution: Attribution, masks: np.ndarray, targets: np.ndarray) -> FitQuality:
    """Score ``attribution`` on fresh keep-masks ``[N, *features]`` and their targets
    ``[n_examples, N]``.

    Example:
        >>> fit_quality(attribution, heldout_masks, heldout_targets).summary()
    """
    targets = np.atleast_2d(np.asarray(targets, dtype=np.float64))
    predicted = attribution.predict(masks)
    scores = [_scores(p, t) for p, t in zip(predicted, targets, strict=True)]
    pooled = _scores(attribution.predict_pooled(masks), targets.mean(0))
    return FitQuality(
        pearson=np.array([s["pearson"] for s in scores]),
        spearman=np.array([s["spearman"] for s in scores]),
        r2=np.array([s["r2"] for s in scores]),
        pooled=pooled,
        n_heldout=int(targets.shape[1]),
    )


def _scores(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """Pearson, Spearman, R²; correlations are NaN when either side is constant."""
    constant = np.ptp(predicted) == 0 or np.ptp(measured) == 0 or len(measured) < 3
    return {
        "pearson": np.nan if constant else float(pearsonr(predicted, measured).statistic),
        "spearman": np.nan if constant else float(spearmanr(predicted, measured).statistic),
        "r2": float(r2_score(measured, predicted)) if np.ptp(measured) > 0 else np.nan,
    }


def fit_store(
    store: MaskStore, method: str = "ols", regularization: float | None = None
) -> tuple[Attribution, FitQuality | None]:
    """Fit the ``train`` split of a finished store; score it on its ``heldout`` split (None
    when the run has no held-out masks). Masks are recomputed from the stored config.

    Example:
        >>> attribution, quality = fit_store(MaskStore.from_path("runs/coco"), method="ridge")
    """
    splits = stored_splits(store)
    train = splits["train"]
    attribution = fit_attribution(
        train.masks(0, train.size), store.targets("train"), method, regularization
    )
    if "heldout" not in splits:
        return attribution, None
    held = splits["heldout"]
    return attribution, fit_quality(attribution, held.masks(0, held.size), store.targets("heldout"))


def stored_splits(store: MaskStore) -> dict[str, Any]:
    """The mask sets of the run a store was made for, by split name."""
    run = store.meta["run"]
    return AttributionConfig.from_json(run["config"]).splits(run["n_layers"], run["n_heads"])
