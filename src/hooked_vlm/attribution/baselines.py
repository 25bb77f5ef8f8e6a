"""Baseline head rankings the attribution is compared against (Kim et al.).

- :func:`leave_one_out`: ablate one head at a time (everything else kept); a head's score is
  the drop of the target, ``y(clean) − y(head ablated)``. Misses heads that back each other up.
- :func:`image_attention`: attention weight of text queries on image keys per head, reduced
  inside a pattern hook as each layer runs (no ``L × H × S²`` cache is ever held).

Example:
    >>> loo = leave_one_out(evaluator.evaluate, range(10), n_layers, n_heads)   # [10, L, H]
    >>> attn = image_attention(model, [ex.inputs for ex in examples])           # [n, L, H]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from hooked_vlm.attribution.masks import LeaveOneOutMasks, ReferenceMasks
from hooked_vlm.attribution.store import MaskStore
from hooked_vlm.interventions._common import editable_attention
from hooked_vlm.interventions.selectors import Selector, resolve

if TYPE_CHECKING:
    from hooked_vlm.model import HookedVLM

EvaluateFn = Callable[[int, np.ndarray], np.ndarray]


def leave_one_out(
    evaluate: EvaluateFn, examples: Iterable[int], n_layers: int, n_heads: int
) -> np.ndarray:
    """Single-head ablation drops ``[n_examples, n_layers, n_heads]``: one evaluation per head
    (plus the clean run) per example; ``evaluate(example, masks) -> targets``.

    Example:
        >>> leave_one_out(evaluator.evaluate, range(evaluator.n_examples), 32, 32)
    """
    loo = LeaveOneOutMasks(n_layers, n_heads)
    clean = ReferenceMasks(n_layers, n_heads).masks(0, 1)
    rows = []
    for example in examples:
        y = evaluate(example, np.concatenate([clean, loo.masks(0, loo.size)]))
        rows.append(loo_drop(y[:1], y[None, 1:]))
    return np.concatenate(rows).reshape(-1, n_layers, n_heads)


def leave_one_out_from_store(store: MaskStore) -> np.ndarray:
    """The same drops from a store run with ``leave_one_out=True`` ``[n_examples, L, H]``."""
    run = store.meta["run"]
    drop = loo_drop(store.targets("reference")[:, 0], store.targets("loo"))
    return drop.reshape(-1, run["n_layers"], run["n_heads"])


def loo_drop(clean: np.ndarray, ablated: np.ndarray) -> np.ndarray:
    """``clean [n] − ablated [n, heads]``: how much ablating each head alone lowers the target."""
    return np.asarray(clean, dtype=np.float64)[:, None] - np.asarray(ablated, dtype=np.float64)


@torch.no_grad()
def image_attention(
    model: HookedVLM,
    inputs: Sequence[Mapping[str, Any]],
    queries: Selector = "text_after_image",
    keys: Selector = "image",
) -> np.ndarray:
    """Attention mass on ``keys`` per head, averaged over ``queries`` rows:
    ``[n_examples, n_layers, n_heads]`` (one forward per element of ``inputs``, each of which
    may hold several examples).

    Example:
        >>> image_attention(model, [ex.inputs for ex in examples]).mean(0)   # [L, H]
    """
    layers = list(range(model.cfg.n_layers))
    editable_attention(model, layers, "image_attention (it reads attention patterns)")
    out = []
    for batch in inputs:
        layout = model.layout(**batch)
        q_pos, k_pos = resolve(layout, queries), resolve(layout, keys)
        mass = torch.zeros(layout.batch_size, len(layers), model.cfg.n_heads)

        def reduce(pattern: Tensor, hook: Any, _q: Any = q_pos, _k: Any = k_pos,
                   _mass: Tensor = mass) -> None:
            layer = hook.layer()
            n_q, n_k = pattern.shape[-2:]
            start = model.state.query_start
            rows = _q.window(start, start + n_q, pattern.device).to(pattern.dtype)
            cols = _k.window(0, n_k, pattern.device).to(pattern.dtype)
            on_keys = torch.einsum("bhqk,bk->bhq", pattern, cols)
            per_row = torch.einsum("bhq,bq->bh", on_keys, rows) / rows.sum(1, keepdim=True)
            _mass[:, layer] = per_row.float().cpu()

        hooks = [(f"blocks.{layer}.attn.hook_pattern", reduce) for layer in layers]
        model.run_with_hooks(batch, fwd_hooks=hooks)
        out.append(mass.numpy())
    return np.concatenate(out)
