"""Stage 7, token level, inside each example's top heads (Kim et al.: image information reaches
text at role tokens such as "ASSISTANT" and at the last token, carried by a sparse set of
image tokens). One unit per example of the first ``token_examples``:

- text query positions (``query_position_scores``): the top heads are ablated for one query
  position at a time; a position's score is the drop of the target;
- image tokens (``image_token_scores``, modes that ablate keys only): random subsets of image
  tokens ablated in the top heads, a linear fit, scored on fresh subsets; each token's keep
  coefficient, put onto the picture's patch grid (``layout.patch_grid`` +
  ``analysis.scatter_to_grid``).

The top heads are the example's own ``token_heads`` highest attributions.

Example:
    >>> TOKENS.reduce(session, session.units).examples[0]["top_text"]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hooked_vlm.analysis import scatter_to_grid
from hooked_vlm.attribution import image_token_scores, query_position_scores, top_heads
from hooked_vlm.attribution.token_level import KEY_MODES
from hooked_vlm.layout import patch_grid
from hooked_vlm.pictures import picture_fit, thumbnail
from hooked_vlm.storage import Store
from hooked_vlm.studies.head_attribution.config import runs_with
from hooked_vlm.studies.head_attribution.session import HeadAttributionSession as Session
from hooked_vlm.studies.head_attribution.stage_fit import FitResult
from hooked_vlm.studies.session import key_index
from hooked_vlm.studies.study import Result, Stage

TOP_POSITIONS = 3  # text positions named per example in the results


def _keys(session: Session) -> list[str]:
    return [f"tokens/{i:04d}" for i in session.token_rows]


def _tokens(session: Session, key: str) -> dict[str, np.ndarray]:
    config, evaluator, example = session.config, session.evaluator, key_index(key)
    settings = config.attribution
    heads = top_heads(session.result(FitResult).coef[example], session.token_heads)
    text = query_position_scores(evaluator, example, heads)
    out = {
        "heads": heads, "text_positions": text.positions, "text_scores": text.scores,
        "text_tokens": np.array(text.tokens if text.tokens is not None
                                else [str(p) for p in text.positions]),
        "text_reference": np.float64(text.reference),
    }
    if settings.mode not in KEY_MODES:
        return out
    image = image_token_scores(
        evaluator, example, heads, n_subsets=config.image_subsets, alpha=config.image_alpha,
        n_heldout=config.image_heldout, seed=config.seed, keys=settings.keys,
        method=config.regression, regularization=config.regularization,
    )
    inputs = session.examples[example].inputs
    layout = evaluator.layout(example)
    full = torch.full((layout.seq_len,), float("nan"), dtype=torch.float64)
    full[torch.from_numpy(image.positions)] = torch.from_numpy(image.scores)
    heat = scatter_to_grid(full, patch_grid(layout, 0, **inputs))
    out.update({
        "image_positions": image.positions, "image_scores": image.scores,
        "image_reference": np.float64(image.reference), "heat": heat.numpy(),
        "picture": thumbnail(session.data[example]["image"]),
    })
    if image.quality is not None:
        summary = image.quality.summary()
        out["image_quality"] = np.array([summary[f"{m}_mean"] for m in ("pearson", "spearman",
                                                                         "r2")])
    return out


@dataclass
class TokensResult(Result):
    """Per example (``examples``): its top heads, each text position's score and the image
    tokens' keep coefficients on the patch grid (``heat``, with the ``picture``, by example)."""

    STAGE = "tokens"
    examples: list[dict[str, Any]]
    token_heads: int
    image_level: bool
    mode: str
    picture_fit: str
    image_subsets: int
    image_heldout: int
    image_alpha: float
    heat: dict[str, np.ndarray]
    picture: dict[str, np.ndarray]

    def headline(self) -> list[tuple[str, str]]:
        tops = [e["top_text"][0] for e in self.examples if e["top_text"]]
        common = max(set(tops), key=tops.count) if tops else "–"
        rows = [(f"text position whose cut hurts most (top {self.token_heads} heads)",
                 f"{common!r} in {tops.count(common)} of {len(tops)} examples")]
        if self.image_level:
            shares = [e["image_share_top"] for e in self.examples]
            rows.append(("image-token weight on the top 10% of tokens",
                         f"{np.mean(shares):.2f} (mean over {len(shares)} examples)"))
        return rows


def _reduce(session: Session, store: Store) -> TokensResult:
    loaded = {i: store.load(key) for i, key in zip(session.token_rows, _keys(session),
                                                    strict=True)}
    examples: list[dict[str, Any]] = []
    heat: dict[str, np.ndarray] = {}
    picture: dict[str, np.ndarray] = {}
    for i, unit in loaded.items():
        order = np.argsort(-unit["text_scores"], kind="stable")[:TOP_POSITIONS]
        entry: dict[str, Any] = {
            "example": i, "label": session.labels[i], "answer": session.answers[i],
            "heads": [[int(layer), int(head)] for layer, head in np.argwhere(unit["heads"])],
            "tokens": unit["text_tokens"].tolist(), "positions": unit["text_positions"].tolist(),
            "text_scores": unit["text_scores"].tolist(),
            "text_reference": float(unit["text_reference"]),
            "top_text": [str(unit["text_tokens"][j]) for j in order],
            "last_is_top": bool(len(order) and order[0] == len(unit["text_scores"]) - 1),
        }
        if "heat" in unit:
            heat[str(i)], picture[str(i)] = unit["heat"], unit["picture"]
            entry["image_reference"] = float(unit["image_reference"])
            entry["image_quality"] = (dict(zip(("pearson", "spearman", "r2"),
                                               unit["image_quality"].tolist(), strict=True))
                                      if "image_quality" in unit else None)
            entry["image_share_top"] = _top_share(unit["image_scores"])
        examples.append(entry)
    mode = session.config.attribution.mode
    return TokensResult(
        examples=examples, token_heads=session.token_heads, image_level=mode in KEY_MODES,
        mode=mode, picture_fit=picture_fit(session.model),
        image_subsets=session.config.image_subsets, image_heldout=session.config.image_heldout,
        image_alpha=session.config.image_alpha, heat=heat, picture=picture)


def _top_share(scores: np.ndarray) -> float:
    """Fraction of the positive keep coefficients held by the top 10% of image tokens: near
    0.1 when evenly spread, near 1 when a few tokens carry the image (sparse)."""
    positive = np.clip(scores, 0, None)
    total = positive.sum()
    if total == 0:
        return 0.0
    n_top = max(1, round(0.1 * len(scores)))
    return float(np.sort(positive)[::-1][:n_top].sum() / total)


TOKENS = Stage("tokens", "7. Token level: text positions and image tokens", _keys, _tokens,
               _reduce, TokensResult, needs=("fit",), skip=runs_with("regression", "both"))
