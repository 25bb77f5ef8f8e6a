"""Neighbourhood overlap with labels (Narrow Gate, analysis 4), and token pickers for it.

``chi = (1/n) sum_i (1/k) sum_{j in kNN_k(i)} 1[y_i = y_j]``: the fraction of each point's
``k`` nearest neighbours (Euclidean, the point itself excluded) that share its label, averaged
over points. 1 when labels form pure neighbourhoods, about ``sum_c p_c^2`` (``1/C`` for ``C``
balanced classes) when the representation ignores the labels.

Example:
    >>> eoi = token_vectors(cache["blocks.20.hook_resid_post"], layout.mask("eoi"))
    >>> label_overlap(eoi, class_ids, k=30)
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from hooked_vlm.analysis.density_peaks import nearest_neighbours
from hooked_vlm.analysis.density_peaks.neighbours import as_points


def label_overlap(
    x: Float[np.ndarray, "n d"] | Float[Tensor, "n d"],
    labels: Int[np.ndarray, " n"] | Int[Tensor, " n"] | list,
    k: int = 30,
    class_balanced: bool = False,
) -> float:
    """Mean fraction of each point's ``k`` nearest neighbours that share its label.

    ``class_balanced=True`` weighs each point by ``1 / (size of its class)``, so every class
    counts the same: DADApy's ``return_label_overlap`` default (``weighted=True``), which the
    Narrow Gate code used. The two agree for balanced classes.
    """
    points = as_points(x)
    y = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels).reshape(-1)
    n = len(points)
    if len(y) != n:
        raise ValueError(f"{len(y)} labels for {n} points")
    if not 1 <= k < n:
        raise ValueError(f"k = {k} must be at least 1 and below the number of points n = {n}")
    neighbours = nearest_neighbours(points, k).indices[:, 1:]
    per_point = (y[neighbours] == y[:, None]).mean(1)
    if not class_balanced:
        return float(per_point.mean())
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    return float(np.average(per_point, weights=1.0 / counts[inverse]))


def chance_overlap(labels: Int[np.ndarray, " n"] | list, class_balanced: bool = False) -> float:
    """The label overlap expected when neighbours ignore the labels (chosen at random).

    A point of class ``c`` then finds ``(n_c - 1) / (n - 1)`` of its neighbours in its class;
    averaged over points (``class_balanced``: over classes), as :func:`label_overlap` averages.
    The baseline to draw under an overlap curve (``1 / C`` for ``C`` balanced classes, large n).

    Example:
        >>> chance_overlap(["a", "a", "b", "b"])   # each point: 1 of its 3 others shares it
        0.3333333333333333
    """
    y = np.asarray(labels).reshape(-1)
    if len(y) < 2:
        raise ValueError(f"need at least 2 labels, got {len(y)}")
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    per_point = (counts[inverse] - 1) / (len(y) - 1)
    weights = 1.0 / counts[inverse] if class_balanced else None
    return float(np.average(per_point, weights=weights))


def token_vectors(
    activations: Float[Tensor, "batch pos d"], selector: Bool[Tensor, "batch pos"]
) -> Float[Tensor, "batch d"]:
    """The vector at the one selected position of each example (EOI, last image, ...)."""
    _check_shapes(activations, selector)
    counts = selector.sum(1)
    if not bool((counts == 1).all()):
        bad = torch.nonzero(counts != 1).flatten().tolist()
        raise ValueError(
            f"the selector must have exactly one True per example; example(s) {bad} have "
            f"{counts[bad].tolist()}. Pick one token group per image (e.g. layout.mask('eoi') "
            "with one image per example) or use mean_token_vector for a group."
        )
    return activations[selector.to(activations.device)]


def mean_token_vector(
    activations: Float[Tensor, "batch pos d"], selector: Bool[Tensor, "batch pos"]
) -> Float[Tensor, "batch d"]:
    """Mean of each example's vectors over its selected positions (e.g. all image tokens)."""
    _check_shapes(activations, selector)
    counts = selector.sum(1)
    if not bool((counts > 0).all()):
        bad = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"the selector has no True position in example(s) {bad}")
    weights = selector.to(activations.device, torch.float32)
    total = torch.einsum("bp,bpd->bd", weights, activations.float())
    return total / counts.to(total.device)[:, None]


def _check_shapes(activations: Tensor, selector: Tensor) -> None:
    if activations.ndim != 3 or selector.shape != activations.shape[:2]:
        raise ValueError(
            f"expected activations [batch, pos, d] and a selector [batch, pos]; got "
            f"{tuple(activations.shape)} and {tuple(selector.shape)}"
        )
    if selector.dtype != torch.bool:
        raise ValueError(f"the selector must be a bool mask, got dtype {selector.dtype}")
