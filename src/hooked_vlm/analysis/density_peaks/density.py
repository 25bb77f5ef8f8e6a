"""The kNN estimate of the log-density at each point, with its statistical error."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jaxtyping import Float
from scipy.special import gammaln

from hooked_vlm.analysis.density_peaks.neighbours import Neighbours


@dataclass(frozen=True)
class LogDensity:
    """Log-density of each point, its standard error, and the neighbourhood size ``k`` used."""

    log_density: Float[np.ndarray, " n"]
    error: Float[np.ndarray, " n"]
    k: int


def knn_log_density(neighbours: Neighbours, intrinsic_dim: float, k: int) -> LogDensity:
    """``log rho_i = log k - log N - log(V_d r_ik^d)``, error ``1 / sqrt(k)``.

    ``r_ik`` is the distance to the ``k``-th neighbour and ``V_d = pi^(d/2) / Gamma(d/2 + 1)``
    the volume of the unit ball in the intrinsic dimension ``d``: ``k`` points in a ball of
    volume ``V_d r^d`` out of ``N``. The error is that of a Poisson count of ``k``. Same
    quantities as DADApy's ``compute_density_kNN(k)``.

    Example:
        >>> density = knn_log_density(nearest_neighbours(x, maxk=32), intrinsic_dim=4.0, k=16)
        >>> density.log_density.shape, density.error[0]       # (n,), 0.25
    """
    if intrinsic_dim <= 0:
        raise ValueError(f"intrinsic_dim must be positive, got {intrinsic_dim}")
    neighbours.require(k, f"the kNN density with k = {k}")
    d = intrinsic_dim
    log_unit_ball = d / 2 * np.log(np.pi) - gammaln(d / 2 + 1)
    radius = neighbours.distances[:, k]
    log_density = np.log(k) - np.log(neighbours.n) - log_unit_ball - d * np.log(radius)
    return LogDensity(log_density, np.full(neighbours.n, 1.0 / np.sqrt(k)), k)
