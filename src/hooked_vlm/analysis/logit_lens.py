"""Logit lens: what the unembedding reads out of a residual stream before the last layer.

``logits = unembed(ln_final(resid))`` for any residual (any layer, any position): the model's
own final norm and unembedding applied early. Pure tensor math: the norm is passed as a
callable (the HF module, e.g. ``model.bridge.ln_final.original_component``), the unembedding
as its weight ``W_U [d_model, vocab]`` and optional bias; only the top ``k`` tokens and their
probabilities are kept, computed in chunks of positions so that a 576-patch x 32k-vocabulary
read-out never holds more than ``chunk x vocab`` logits.

Example:
    >>> resid = cache["blocks.10.hook_resid_post"][0, patches]          # [n, d_model]
    >>> top = logit_lens(resid, ln_final, lm_head.weight.T, lm_head.bias, k=3)
    >>> top.ids.shape, top.probs.shape                                   # [n, 3] each
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor


@dataclass(frozen=True)
class LensTop:
    """The ``k`` most likely tokens of each residual and their softmax probabilities (over the
    vocabulary left after ``exclude``), most likely first."""

    ids: Int[Tensor, "*lead k"]
    probs: Float[Tensor, "*lead k"]


def logit_lens(
    resid: Float[Tensor, "*lead d_model"],
    norm: Callable[[Tensor], Tensor],
    W_U: Float[Tensor, "d_model vocab"],
    b_U: Float[Tensor, " vocab"] | None = None,
    *,
    k: int = 1,
    exclude: Int[Tensor, " n"] | None = None,
    chunk: int = 256,
) -> LensTop:
    """Top-``k`` tokens of ``softmax(norm(resid) @ W_U + b_U)`` for every residual vector.

    Args:
        resid: residual vectors, any leading shape (layers, positions, ...).
        norm: the model's final norm, applied to ``[n, d_model]`` chunks.
        W_U, b_U: the unembedding (``lm_head.weight.T`` and ``lm_head.bias``).
        k: how many tokens to keep per vector.
        exclude: token ids the read-out may not name (their logits are set to -inf before the
            softmax), e.g. Chameleon's image-code tokens, which its own head masks.
        chunk: vectors per matrix product (bounds memory at ``chunk x vocab``).

    Example:
        >>> top = logit_lens(resid, ln_final, W_U, k=1)
        >>> top.ids[..., 0]      # the lens's token for each vector
    """
    d_model, vocab = W_U.shape
    if resid.shape[-1] != d_model:
        raise ValueError(
            f"resid ends in {resid.shape[-1]} features but W_U is [{d_model}, {vocab}]: pass the "
            "unembedding as [d_model, vocab] (lm_head.weight.T) and residual-stream vectors."
        )
    if not 1 <= k <= vocab:
        raise ValueError(f"k={k} must lie in 1..{vocab} (the vocabulary size).")
    lead = resid.shape[:-1]
    flat = resid.reshape(-1, d_model)
    n = flat.shape[0]
    # outputs and one logits buffer allocated once: small results interleaved with big
    # per-chunk temporaries fragment the CPU heap (2.4 GB peak for 18k vectors x 32k vocab)
    ids = torch.empty(n, k, dtype=torch.long, device=W_U.device)
    probs = torch.empty(n, k, dtype=torch.float32, device=W_U.device)
    buffer = torch.empty(min(chunk, n), vocab, dtype=W_U.dtype, device=W_U.device)
    for start in range(0, n, chunk):
        x = norm(flat[start : start + chunk].to(W_U.device, W_U.dtype))
        logits = torch.matmul(x, W_U, out=buffer[: x.shape[0]])
        if b_U is not None:
            logits += b_U.to(logits.dtype)
        if exclude is not None and exclude.numel():
            logits[:, exclude.to(logits.device)] = float("-inf")
        top = logits.topk(k, dim=-1)
        lse = torch.logsumexp(logits.float(), -1, keepdim=True)
        ids[start : start + x.shape[0]] = top.indices
        probs[start : start + x.shape[0]] = (top.values.float() - lse).exp()
    return LensTop(ids.reshape(*lead, k), probs.reshape(*lead, k))
