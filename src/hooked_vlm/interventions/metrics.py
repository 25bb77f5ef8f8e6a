"""Metrics over next-token logits ``[batch, vocab]`` (the Narrow Gate patching metrics).

Example:
    >>> ld_clean = logit_difference(clean_last, target_ids, source_ids)
    >>> ld_patch = logit_difference(patched_last, target_ids, source_ids)
    >>> flip_rate(ld_clean, ld_patch), distribution_overlap(patched_last, source_last).mean()
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor


def logit_difference(
    logits: Float[Tensor, "batch vocab"],
    target_ids: Int[Tensor, " batch"] | int,
    source_ids: Int[Tensor, " batch"] | int,
) -> Float[Tensor, " batch"]:
    """``logit[target] − logit[source]`` per example (first sub-word of each class name).

    Example:
        >>> logit_difference(logits[:, -1], torch.tensor([12, 12]), torch.tensor([30, 30]))
    """
    rows = torch.arange(logits.shape[0], device=logits.device)
    t = torch.as_tensor(target_ids, device=logits.device).expand(logits.shape[0])
    s = torch.as_tensor(source_ids, device=logits.device).expand(logits.shape[0])
    return logits[rows, t] - logits[rows, s]


def flip_rate(
    before: Float[Tensor, "*batch"], after: Float[Tensor, "*batch"]
) -> Float[Tensor, ""]:
    """Fraction of examples whose logit difference changes sign.

    Example:
        >>> flip_rate(torch.tensor([1.0, 2.0]), torch.tensor([-1.0, 3.0]))   # tensor(0.5000)
    """
    return (torch.sign(before) != torch.sign(after)).float().mean()


def distribution_overlap(
    logits_p: Float[Tensor, "batch vocab"], logits_q: Float[Tensor, "batch vocab"]
) -> Float[Tensor, " batch"]:
    """``Σ_v min(p_v, q_v)`` of the two next-token distributions (= 1 − total variation).

    Example:
        >>> distribution_overlap(patched[:, -1], source[:, -1])   # 1.0 when identical
    """
    p = logits_p.float().softmax(-1)
    q = logits_q.float().softmax(-1)
    return torch.minimum(p, q).sum(-1)
