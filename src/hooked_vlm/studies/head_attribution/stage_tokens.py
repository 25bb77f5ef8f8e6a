"""Stage 5, token level, inside each example's top heads (Kim et al.: image information reaches
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
    >>> TOKENS.reduce(session, store).values["examples"][0]["top_text"]
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import torch

from hooked_vlm.analysis import scatter_to_grid
from hooked_vlm.attribution import image_token_scores, query_position_scores, top_heads
from hooked_vlm.attribution.token_level import KEY_MODES
from hooked_vlm.layout import patch_grid
from hooked_vlm.studies.common import picture_fit, thumbnail
from hooked_vlm.studies.head_attribution.session import Session
from hooked_vlm.studies.stages import Reduced, Stage
from hooked_vlm.studies.units import Unit, UnitStore

TOP_POSITIONS = 3  # text positions named per example in the results


def _units(session: Session, store: UnitStore) -> list[Unit]:
    return [Unit(f"tokens/{i:04d}", partial(_tokens, session, i)) for i in session.token_rows]


def _tokens(session: Session, example: int) -> dict[str, np.ndarray]:
    config, evaluator = session.config, session.evaluator
    _, fit = session.result("fit")
    heads = top_heads(fit["coef"][example], session.token_heads)
    text = query_position_scores(evaluator, example, heads)
    out = {
        "heads": heads, "text_positions": text.positions, "text_scores": text.scores,
        "text_tokens": np.array(text.tokens if text.tokens is not None
                                else [str(p) for p in text.positions]),
        "text_reference": np.float64(text.reference),
    }
    if config.mode not in KEY_MODES:
        return out
    image = image_token_scores(
        evaluator, example, heads, n_subsets=config.image_subsets, alpha=config.image_alpha,
        n_heldout=config.image_heldout, seed=config.seed, keys=config.keys,
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


def _reduce(session: Session, store: UnitStore) -> Reduced:
    loaded = {i: store.load(u.key) for i, u in zip(session.token_rows, _units(session, store),
                                                    strict=True)}
    examples: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
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
            arrays[f"heat.{i}"], arrays[f"picture.{i}"] = unit["heat"], unit["picture"]
            entry["image_reference"] = float(unit["image_reference"])
            entry["image_quality"] = (dict(zip(("pearson", "spearman", "r2"),
                                               unit["image_quality"].tolist(), strict=True))
                                      if "image_quality" in unit else None)
            entry["image_share_top"] = _top_share(unit["image_scores"])
        examples.append(entry)
    values = {"examples": examples, "token_heads": session.token_heads,
              "image_level": session.config.mode in KEY_MODES, "mode": session.config.mode,
              "picture_fit": picture_fit(session.model),
              "image_subsets": session.config.image_subsets,
              "image_heldout": session.config.image_heldout,
              "image_alpha": session.config.image_alpha}
    tops = [e["top_text"][0] for e in examples if e["top_text"]]
    common = max(set(tops), key=tops.count) if tops else "–"
    headline = [(f"text position whose cut hurts most (top {session.token_heads} heads)",
                 f"{common!r} in {tops.count(common)} of {len(tops)} examples")]
    if values["image_level"]:
        shares = [e["image_share_top"] for e in examples]
        headline.append(("image-token weight on the top 10% of tokens",
                         f"{np.mean(shares):.2f} (mean over {len(shares)} examples)"))
    return Reduced(values, headline, arrays)


def _top_share(scores: np.ndarray) -> float:
    """Fraction of the positive keep coefficients held by the top 10% of image tokens: near
    0.1 when evenly spread, near 1 when a few tokens carry the image (sparse)."""
    positive = np.clip(scores, 0, None)
    total = positive.sum()
    if total == 0:
        return 0.0
    n_top = max(1, round(0.1 * len(scores)))
    return float(np.sort(positive)[::-1][:n_top].sum() / total)


TOKENS = Stage("tokens", "5. Token level: text positions and image tokens", _units, _reduce)
