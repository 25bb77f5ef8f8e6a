"""Modality gap: cosine between text and image token vectors (Narrow Gate, analysis 1).

For every example one text position and one image position are drawn at random (seeded, the
same positions at every layer, so layers are comparable); at each layer the cosine between the
two vectors is taken and summarised by its median and inter-quartile range.

Two choices the paper and the released code differ on are options:

- ``absolute=True`` takes ``|cos|`` (the released code);
- ``pairs="across_examples"`` compares the text vector of example ``i`` with the image vector of
  every example ``j < i`` (the released code's lower triangle), instead of each example's own
  pair (``"same_example"``, the paper's wording).

Example:
    >>> resid = torch.stack([cache[f"blocks.{l}.hook_resid_post"] for l in range(n_layers)])
    >>> sample = sample_modality_vectors(resid, layout.mask("text"), layout.mask("image"))
    >>> gap = modality_gap(sample)
    >>> gap.median, gap.q25, gap.q75          # one value per layer
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

Pairs = Literal["same_example", "across_examples"]
Residuals = Float[Tensor, "layer batch pos d_model"] | Iterable[Float[Tensor, "batch pos d_model"]]


@dataclass(frozen=True)
class ModalitySample:
    """One text and one image vector per example and layer, and the positions they came from."""

    text: Float[Tensor, "layer batch d_model"]
    image: Float[Tensor, "layer batch d_model"]
    text_positions: Int[Tensor, " batch"]
    image_positions: Int[Tensor, " batch"]


@dataclass(frozen=True)
class ModalityGap:
    """Cosines per layer and pair, with their median and quartiles per layer."""

    cosine: Float[Tensor, "layer pair"]
    median: Float[Tensor, " layer"]
    q25: Float[Tensor, " layer"]
    q75: Float[Tensor, " layer"]


def random_positions(
    mask: Bool[Tensor, "batch pos"], generator: torch.Generator
) -> Int[Tensor, " batch"]:
    """One position per example, uniformly among its True positions."""
    if mask.ndim != 2 or mask.dtype != torch.bool:
        raise ValueError(f"expected a bool mask [batch, pos], got {mask.dtype} {tuple(mask.shape)}")
    empty = torch.nonzero(~mask.any(1)).flatten().tolist()
    if empty:
        raise ValueError(f"example(s) {empty} have no position in the mask to sample from")
    return torch.multinomial(mask.cpu().float(), 1, generator=generator).flatten()


def sample_modality_vectors(
    residuals: Residuals,
    text_mask: Bool[Tensor, "batch pos"],
    image_mask: Bool[Tensor, "batch pos"],
    seed: int = 0,
) -> ModalitySample:
    """Draw one text and one image position per example and gather them at every layer.

    ``residuals`` is a stacked ``[layer, batch, pos, d]`` tensor or any iterable of per-layer
    ``[batch, pos, d]`` tensors (so layers can stream from a cache without stacking).
    """
    generator = torch.Generator().manual_seed(seed)
    text_pos = random_positions(text_mask, generator)
    image_pos = random_positions(image_mask, generator)
    rows = torch.arange(len(text_pos))
    texts, images = [], []
    for layer, resid in enumerate(residuals):
        if resid.ndim != 3 or resid.shape[:2] != text_mask.shape:
            raise ValueError(
                f"layer {layer}: residual of shape {tuple(resid.shape)} is not [batch, pos, d] "
                f"with [batch, pos] = {tuple(text_mask.shape)} as the masks"
            )
        texts.append(resid[rows.to(resid.device), text_pos.to(resid.device)].float().cpu())
        images.append(resid[rows.to(resid.device), image_pos.to(resid.device)].float().cpu())
    if not texts:
        raise ValueError("residuals hold no layer")
    return ModalitySample(torch.stack(texts), torch.stack(images), text_pos, image_pos)


def modality_gap(
    sample: ModalitySample, absolute: bool = False, pairs: Pairs = "same_example"
) -> ModalityGap:
    """Cosine between text and image vectors per layer; median and IQR over the pairs."""
    text = F.normalize(sample.text.float(), dim=-1)
    image = F.normalize(sample.image.float(), dim=-1)
    if pairs == "same_example":
        cosine = (text * image).sum(-1)
    elif pairs == "across_examples":
        if text.shape[1] < 2:
            raise ValueError("pairs='across_examples' needs at least 2 examples")
        i, j = torch.tril_indices(text.shape[1], text.shape[1], offset=-1)
        cosine = torch.einsum("lbd,lcd->lbc", text, image)[:, i, j]
    else:
        raise ValueError(f"pairs must be 'same_example' or 'across_examples', got {pairs!r}")
    if absolute:
        cosine = cosine.abs()
    q25, median, q75 = torch.from_numpy(np.quantile(cosine.numpy(), [0.25, 0.5, 0.75], axis=1))
    return ModalityGap(cosine, median.float(), q25.float(), q75.float())
