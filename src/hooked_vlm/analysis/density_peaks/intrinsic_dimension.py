"""Intrinsic dimension from ratios of neighbour distances: TwoNN and Gride.

Both rest on one fact: in a locally uniform ``d``-dimensional sample, the ratio
``mu = r_{n2} / r_{n1}`` of the distances to the ``n2``-th and ``n1``-th neighbours has a law
that depends only on ``d``, ``n1`` and ``n2``.

- TwoNN (Facco et al. 2017, n1 = 1, n2 = 2): ``mu`` is Pareto, ``-log(1 - F(mu)) = d log mu``;
  ``d`` is the slope through the origin fitted on the empirical CDF with the largest 10 % of the
  ratios left out (they come from the tails, where the local-uniformity assumption fails).
- Gride (Denti et al. 2022, any n1 < n2): maximum likelihood of the density
  ``f(mu) = d (mu^d - 1)^(n2 - n1 - 1) / (B(n2 - n1, n1) mu^((n2 - 1) d + 1))``. Larger ``n1``
  looks at a coarser scale; ``n2 = 2 n1`` is the usual doubling (DADApy's ``range_max`` scan).

Example:
    >>> nb = nearest_neighbours(x, maxk=64)
    >>> twonn_id(nb), gride_id(nb, n1=8)       # 3.9, (4.1, 0.07)
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float
from scipy.optimize import brentq

from hooked_vlm.analysis.density_peaks.neighbours import Neighbours

_EPS = np.finfo(np.float64).eps


def twonn_id(neighbours: Neighbours, keep_fraction: float = 0.9) -> float:
    """TwoNN intrinsic dimension, fitted on the smallest ``keep_fraction`` of the ratios.

    As DADApy's ``compute_id_2NN()`` (its default "base" fit): with ``N`` points and the ratios
    sorted, ``x_i = log mu_(i)`` and ``y_i = -log(1 - i / N)`` for ``i = 1 .. int(N * keep)``,
    ``d = sum x y / sum x^2``.
    """
    if not 0.0 < keep_fraction < 1.0:
        raise ValueError(
            f"keep_fraction = {keep_fraction} must lie strictly between 0 and 1 (the fit "
            "needs the empirical CDF below 1; 0.9 is the usual choice)"
        )
    neighbours.require(2, "TwoNN")
    n = neighbours.n
    log_mu = np.sort(np.log(neighbours.distances[:, 2] / neighbours.distances[:, 1]))
    kept = int(n * keep_fraction)
    x = log_mu[:kept]
    y = -np.log(1.0 - np.arange(1, kept + 1) / n)
    return float(x @ y / (x @ x))


def gride_id(
    neighbours: Neighbours,
    n1: int = 1,
    n2: int | None = None,
    bounds: tuple[float, float] = (1e-3, 1e3),
) -> tuple[float, float]:
    """Gride maximum-likelihood intrinsic dimension at scale ``(n1, n2 = 2 n1)`` and its error.

    As DADApy: ratios equal to 1 are nudged up by 10 machine epsilons; ratios above
    ``q50 + 20 (q95 - q50)`` (overlapping points, fat tails) are left out; the score uses
    ``(N - 1) / d`` in place of ``N / d`` (for ``n1 = 1, n2 = 2`` this is the unbiased
    estimator ``(N - 1) / sum log mu``); the root is searched in ``bounds``. The error is
    ``1 / sqrt(Fisher information)`` at the estimate.

    Returns:
        ``(dimension, standard error)``.
    """
    n2 = 2 * n1 if n2 is None else n2
    if not 1 <= n1 < n2:
        raise ValueError(f"Gride needs 1 <= n1 < n2, got n1 = {n1}, n2 = {n2}")
    neighbours.require(n2, f"Gride at n2 = {n2}")
    mu = neighbours.distances[:, n2] / neighbours.distances[:, n1]
    mu = np.where(mu == 1.0, mu + 10 * _EPS, mu)
    q95, q50 = np.percentile(mu, [95, 50])
    mu = mu[mu < q50 + 20 * (q95 - q50)]
    log_mu = np.log(mu)

    def score(d: float) -> float:
        one_minus = np.maximum(1.0 - mu ** (-d), 2 * _EPS)
        return (len(mu) - 1) / d + float(np.sum(((n2 - n1 - 1) / one_minus - (n2 - 1)) * log_mu))

    low, high = bounds
    if score(low) * score(high) > 0:
        raise ValueError(
            f"the Gride likelihood has no maximum for d in {bounds} at n1 = {n1}, n2 = {n2}: "
            "the points may be (nearly) identical or the bounds too narrow"
        )
    dim = float(brentq(score, low, high, xtol=1e-10, rtol=1e-12))
    mu_d = mu ** (-dim)
    one_minus = np.maximum(1.0 - mu_d, 5 * _EPS)
    fisher = len(mu) / dim**2 + np.sum((n2 - n1 - 1) * (log_mu / one_minus) ** 2 * mu_d)
    return dim, float(fisher**-0.5)


def gride_id_scaling(
    neighbours: Neighbours, range_max: int = 64
) -> tuple[Float[np.ndarray, " scale"], Float[np.ndarray, " scale"], np.ndarray]:
    """Gride at the doubling scales ``n1 = 1, 2, 4, ...`` with ``n2 = 2 n1 <= range_max``.

    The same scales as DADApy's ``return_id_scaling_gride(range_max)``: entry ``i`` uses
    ``n1 = 2**i`` (the Narrow Gate code keeps entry 3, ``n1 = 8``, with ``range_max = 128``).

    Returns:
        ``(dimensions, errors, n2 of each scale)``.
    """
    n1s = [2**i for i in range(int(np.log2(range_max)))]
    if not n1s:
        raise ValueError(f"range_max = {range_max} must be at least 2")
    estimates = np.array([gride_id(neighbours, n1) for n1 in n1s])
    return estimates[:, 0], estimates[:, 1], 2 * np.array(n1s)
