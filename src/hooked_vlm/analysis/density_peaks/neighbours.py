"""Each point's nearest neighbours, nearest first: the input of every density-peak estimator."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float, Int
from sklearn.neighbors import NearestNeighbors

Metric = Literal["euclidean", "cosine"]
METRICS = ("euclidean", "cosine")


@dataclass(frozen=True)
class Neighbours:
    """Distances and indices of each point's ``maxk`` nearest neighbours, nearest first.

    Column 0 is the point itself (distance 0), so ``distances[i, k]`` is the distance from
    point ``i`` to its ``k``-th neighbour and ``indices[i, 1:k + 1]`` its ``k`` neighbours.
    """

    distances: Float[np.ndarray, "n maxk_plus_1"]
    indices: Int[np.ndarray, "n maxk_plus_1"]
    metric: Metric

    @property
    def n(self) -> int:
        return int(self.indices.shape[0])

    @property
    def maxk(self) -> int:
        return int(self.indices.shape[1]) - 1

    def require(self, k: int, what: str) -> None:
        """Raise unless neighbours up to rank ``k`` are available."""
        if not 1 <= k <= self.maxk:
            raise ValueError(
                f"{what} needs neighbours up to rank {k}, but these neighbours go up to rank "
                f"{self.maxk} (n = {self.n} points): call nearest_neighbours with maxk >= {k} "
                "(and n > maxk)."
            )

    def truncate(self, maxk: int) -> Neighbours:
        """The same neighbours up to rank ``maxk``."""
        self.require(maxk, "truncate")
        return Neighbours(self.distances[:, : maxk + 1], self.indices[:, : maxk + 1], self.metric)


def as_points(x: Float[np.ndarray, "n d"] | Float[torch.Tensor, "n d"]) -> np.ndarray:
    """``x`` as a float64 numpy array ``[n, d]``, checked to be finite."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    points = np.asarray(x, dtype=np.float64)
    if points.ndim != 2:
        raise ValueError(f"expected points [n, d], got an array of shape {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("points contain NaN or infinite values")
    return points


def nearest_neighbours(
    x: Float[np.ndarray, "n d"] | Float[torch.Tensor, "n d"],
    maxk: int,
    metric: Metric = "euclidean",
) -> Neighbours:
    """The ``maxk`` nearest neighbours of every point of ``x`` (scikit-learn, self excluded).

    ``metric="cosine"`` is scikit-learn's cosine distance ``1 - cos``. Zero distances to a
    neighbour (duplicate points) are raised to float64 machine epsilon with a warning, as
    DADApy's ``remove_zero_dists`` does, so that log-distances stay finite.

    Example:
        >>> nb = nearest_neighbours(np.random.randn(500, 16), maxk=30)
        >>> nb.distances.shape, nb.indices[:, 0]   # (500, 31), each point itself
    """
    points = as_points(x)
    n = len(points)
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; accepted: {', '.join(METRICS)}")
    if not 1 <= maxk < n:
        raise ValueError(f"maxk = {maxk} must be at least 1 and below the number of points {n}")
    distances, indices = NearestNeighbors(n_neighbors=maxk, metric=metric).fit(points).kneighbors()
    zero = distances < np.finfo(np.float64).eps
    if zero.any():
        warnings.warn(
            f"{int(zero.any(1).sum())} points have a neighbour at distance 0 (duplicate points?); "
            "those distances are set to machine epsilon.",
            stacklevel=2,
        )
        distances[zero] = np.finfo(np.float64).eps
    own = np.arange(n)[:, None]
    return Neighbours(
        np.hstack([np.zeros((n, 1)), distances]), np.hstack([own, indices]), metric
    )
