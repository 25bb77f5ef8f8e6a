"""The optimisation loop: next-token loss from hidden states, AdamW, warmup + cosine decay.

The loss is computed as ``lm_head(decoder hidden states)`` rather than from the model's
``logits``: ``ChameleonForConditionalGeneration.forward`` sets image-token logits to the
dtype's minimum (it only generates text), which would make the image-generation loss
infinite. Both tiny models expose ``model.model`` (returns ``last_hidden_state``) and
``model.lm_head``.

Example:
    >>> losses = run_loop(model, params, next_batch, steps=100, lr=2e-3)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from hooked_vlm.training.batches import IGNORE


def next_token_loss(
    model: nn.Module,
    batch: dict[str, Tensor],
    image_codes: Int[Tensor, " n"] | None = None,
    image_weight: float = 1.0,
) -> Float[Tensor, ""]:
    """Weighted mean cross-entropy of the labelled tokens.

    Targets among ``image_codes`` (VQ code token ids) weigh ``image_weight``, text targets 1:
    64 high-entropy code targets per generated image would otherwise drown the text answers.
    """
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    hidden = model.model(**inputs).last_hidden_state
    logits = model.lm_head(hidden[:, :-1])
    targets = batch["labels"][:, 1:]
    losses = nn.functional.cross_entropy(
        logits.transpose(1, 2), targets.clamp(min=0), reduction="none"
    )
    weights = (targets != IGNORE).float()
    if image_codes is not None:
        weights = torch.where(torch.isin(targets, image_codes), image_weight * weights, weights)
    return (losses * weights).sum() / weights.sum()


def run_loop(
    model: nn.Module,
    params: Iterable[nn.Parameter],
    next_batch: Callable[[int], dict[str, Tensor]],
    *,
    steps: int,
    lr: float,
    warmup: int = 50,
    weight_decay: float = 0.01,
    clip: float = 1.0,
    log_every: int = 50,
    log: Callable[[str], None] | None = None,
    image_codes: Int[Tensor, " n"] | None = None,
    image_weight: float = 1.0,
    around: Callable[[dict[str, Tensor]], AbstractContextManager[Any]] | None = None,
    penalty: Callable[[dict[str, Tensor]], Tensor] | None = None,
) -> list[float]:
    """Train for ``steps`` steps; returns the loss of every step.

    ``next_batch(step)`` must be a pure function of ``step`` (and its own seeded state) for
    the run to be reproducible. ``image_codes``/``image_weight``: see :func:`next_token_loss`.
    ``around(batch)``: a context each step's forward runs in, e.g. attention hooks built from
    the batch's token layout (:mod:`hooked_vlm.training.finetune`); ``penalty(batch)``: a
    term added to the loss, computed outside that context (:mod:`hooked_vlm.training.gate`).
    The returned losses are the next-token losses, without the penalty.
    """
    params = list(params)
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=weight_decay)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    model.train()
    losses: list[float] = []
    start = time.perf_counter()
    for step in range(steps):
        batch = next_batch(step)
        with around(batch) if around is not None else nullcontext():
            loss = next_token_loss(model, batch, image_codes, image_weight)
        total = loss + penalty(batch) if penalty is not None else loss
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if log is not None and (step + 1) % log_every == 0:
            recent = sum(losses[-log_every:]) / log_every
            log(f"step {step + 1}/{steps}  loss {recent:.4f}  "
                f"{time.perf_counter() - start:.0f}s")
    model.eval()
    return losses
