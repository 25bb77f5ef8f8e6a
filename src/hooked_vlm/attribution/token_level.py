"""Token level, within chosen heads: which text tokens receive image information, and which
image tokens carry it (Kim et al.: role tokens such as "ASSISTANT:" and the last token receive
it; a sparse set of object and background image tokens carries it).

- :func:`query_position_scores`: the chosen heads are ablated (the run's mode) for one text
  query position at a time; a position's score is the drop of the target.
- :func:`image_token_scores`: random subsets of image tokens are ablated in the chosen heads
  (each token with probability ``alpha``), for every text query; a linear fit over the subsets
  gives each image token's score (its keep coefficient), like the head attribution itself, and
  fresh subsets score the fit. Needs a key-based mode (``"baseline_kv"`` or ``"knockout"``).

Scores come per position of the sequence; mapping image positions to the picture's grid (and
drawing it) is :mod:`hooked_vlm.layout`'s and ``viz``'s business.

Example:
    >>> heads = top_heads(attribution.pooled_coef, k=10)        # bool [L, H]
    >>> text = query_position_scores(evaluator, 0, heads)
    >>> [(tok, s) for tok, s in zip(text.tokens, text.scores)]
    >>> image = image_token_scores(evaluator, 0, heads, n_subsets=512)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hooked_vlm.attribution.curves import ranking
from hooked_vlm.attribution.evaluate import Evaluator
from hooked_vlm.attribution.fit import FitQuality, fit_attribution, fit_quality
from hooked_vlm.attribution.masks import RandomMasks
from hooked_vlm.interventions.selectors import Selector, resolve

KEY_MODES = ("baseline_kv", "knockout")


@dataclass
class PositionScores:
    """Scores per sequence position: ``positions [n]``, ``scores [n]`` (target drop, or keep
    coefficient for image tokens), ``tokens`` (strings, when the model has a tokenizer), and
    ``reference``: the drop with the heads ablated at every position at once."""

    positions: np.ndarray
    scores: np.ndarray
    tokens: list[str] | None
    reference: float
    quality: FitQuality | None = None


def top_heads(scores: np.ndarray, k: int) -> np.ndarray:
    """Bool ``[n_layers, n_heads]``: the ``k`` highest-scoring heads."""
    flat = np.zeros(np.size(scores), dtype=bool)
    flat[ranking(scores)[:k]] = True
    return flat.reshape(np.shape(scores))


def query_position_scores(
    evaluator: Evaluator, example: int, heads: np.ndarray, positions: Selector | None = None
) -> PositionScores:
    """Drop of the target when ``heads`` (bool ``[L, H]``) are ablated for one query position
    at a time, for each of ``positions`` (default: the run's ``queries``).

    Example:
        >>> query_position_scores(evaluator, 0, heads).scores
    """
    layout = evaluator.layout(example)
    pos = resolve(layout, evaluator.config.queries if positions is None else positions).mask[0]
    where = pos.nonzero().flatten()
    rows = torch.zeros(len(where) + 1, layout.seq_len, dtype=torch.bool)
    rows[torch.arange(len(where)), where] = True
    rows[-1] = pos  # every position at once
    masks = _ablating(heads, len(rows) + 1)
    masks[0] = True  # clean
    queries = torch.cat([pos[None], rows])
    y = evaluator.evaluate(example, masks, queries=queries)
    return PositionScores(
        positions=where.numpy(), scores=y[0] - y[1:-1], tokens=_tokens(evaluator, example, where),
        reference=float(y[0] - y[-1]),
    )


def image_token_scores(
    evaluator: Evaluator,
    example: int,
    heads: np.ndarray,
    n_subsets: int = 512,
    alpha: float = 0.5,
    n_heldout: int = 128,
    seed: int = 0,
    keys: Selector = "image",
    method: str = "ols",
    regularization: float | None = None,
) -> PositionScores:
    """Keep coefficients of the image tokens (``keys`` positions) in ``heads``: ``n_subsets``
    random subsets (each token ablated with probability ``alpha``), a linear fit, and its
    held-out quality on ``n_heldout`` fresh subsets.

    Example:
        >>> scores = image_token_scores(evaluator, 0, heads, n_subsets=1024, alpha=0.25)
        >>> scores.quality.summary()["pearson_mean"]
    """
    if evaluator.config.mode not in KEY_MODES:
        raise ValueError(
            f"image-token subsets are ablated through their keys; mode "
            f"{evaluator.config.mode!r} ablates head outputs. Use one of {', '.join(KEY_MODES)}."
        )
    layout = evaluator.layout(example)
    image = resolve(layout, keys).mask[0]
    where = image.nonzero().flatten()
    train = RandomMasks(1, len(where), n_subsets, alpha=alpha, seed=seed)
    held = train.held_out(n_heldout)
    keep = np.concatenate([train.masks(0, n_subsets), held.masks(0, n_heldout)])[:, 0]
    ablated_keys = torch.zeros(len(keep) + 2, layout.seq_len, dtype=torch.bool)
    ablated_keys[2:, where] = torch.from_numpy(~keep)
    ablated_keys[:2] = image  # the clean run and every image token at once
    masks = _ablating(heads, len(ablated_keys))
    masks[0] = True
    nothing = ~ablated_keys.any(1)  # a subset that ablates no token: the clean run
    masks[nothing.numpy()] = True
    ablated_keys[nothing] = image  # (any non-empty selector; no head is ablated)
    y = evaluator.evaluate(example, masks, keys=ablated_keys)
    targets = y[2:]
    fit = fit_attribution(keep[:n_subsets], targets[None, :n_subsets], method, regularization)
    quality = (fit_quality(fit, keep[n_subsets:], targets[None, n_subsets:])
               if n_heldout else None)
    return PositionScores(
        positions=where.numpy(), scores=fit.coef[0], tokens=None,
        reference=float(y[0] - y[1]), quality=quality,
    )


def _ablating(heads: np.ndarray, n: int) -> np.ndarray:
    """``n`` keep-masks that ablate ``heads`` (bool ``[L, H]``) and keep the rest."""
    heads = np.asarray(heads, dtype=bool)
    if not heads.any():
        raise ValueError("no heads chosen: pass a bool [n_layers, n_heads] with some True.")
    return np.repeat(~heads[None], n, axis=0)


def _tokens(evaluator: Evaluator, example: int, where: torch.Tensor) -> list[str] | None:
    if evaluator.model.tokenizer is None:
        return None
    ids = torch.as_tensor(evaluator.examples[example].inputs["input_ids"])[0]
    tokens = evaluator.model.to_str_tokens(ids)
    return [tokens[int(p)] for p in where]
