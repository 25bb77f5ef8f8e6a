"""Advanced Density Peaks clustering (d'Errico, Facco, Laio, Rodriguez 2021).

1. Peaks: a point whose density (less its error) is the highest in its ``k``-neighbourhood
   and that lies in no ``k``-neighbourhood of a denser point.
2. Every other point, taken from the densest down, joins the cluster of its nearest neighbour
   that is denser (already assigned) or a peak.
3. Saddles: a point of cluster ``c`` is a border point towards ``c'`` when its first
   ``k``-neighbour outside ``c`` lies in ``c'`` and that neighbour has no point of ``c`` nearer
   than it (among its ``maxk`` nearest). The saddle between two clusters is their densest
   border point.
4. Merging: two peaks are kept apart only if the saddle is lower than both peaks by ``Z``
   times the summed errors, ``log rho_peak - log rho_saddle >= Z (err_peak + err_saddle)``.
   The failing pair with the highest saddle merges first (the peak with the smaller
   normalised margin joins the other), the merged cluster keeps the higher of the two saddles
   towards every other cluster, and the test is repeated until every pair passes.

Decisions follow DADApy's ``compute_clustering_ADP`` (its Cython code, which the Narrow Gate
code calls; the comparison with its outputs is in ``tests/test_analysis_density_peaks.py``),
including ties (first pair in index order). DADApy's pure-Python variant differs in one place:
it looks for a nearer point of the cluster among ``maxk - 1`` neighbours of ``p2``, not ``maxk``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jaxtyping import Int

from hooked_vlm.analysis.density_peaks.density import LogDensity
from hooked_vlm.analysis.density_peaks.neighbours import Neighbours


@dataclass(frozen=True)
class DensityPeakClusters:
    """Cluster of each point (``0 .. n_clusters - 1``) and the index of each cluster's peak."""

    labels: Int[np.ndarray, " n"]
    centers: Int[np.ndarray, " n_clusters"]

    @property
    def n_clusters(self) -> int:
        return len(self.centers)


def adp_clustering(
    neighbours: Neighbours, density: LogDensity, z: float = 1.65
) -> DensityPeakClusters:
    """Cluster the points by their density peaks, merging peaks not significant at level ``z``.

    Args:
        neighbours: the points' nearest neighbours; all ``maxk`` of them are used to assign
            points and to find saddles.
        density: log-density and error per point; its ``k`` sets the peak neighbourhood.
        z: significance threshold; larger merges more (1.65 ~ one-sided 95 %).

    Example:
        >>> nb = nearest_neighbours(x, maxk=100)
        >>> clusters = adp_clustering(nb, knn_log_density(nb, twonn_id(nb), k=15), z=1.2)
    """
    if z <= 0:
        raise ValueError(f"z must be positive, got {z}")
    if density.log_density.shape != (neighbours.n,):
        raise ValueError(
            f"density has {density.log_density.shape[0]} points, neighbours {neighbours.n}"
        )
    neighbours.require(density.k, f"ADP with k = {density.k}")
    g = density.log_density - density.error
    peaks, denser_holder = _find_peaks(neighbours.indices[:, 1 : density.k + 1], g)
    labels = _assign_to_peaks(neighbours.indices, g, peaks, denser_holder)
    saddle, saddle_err = _saddles(neighbours, density, g, labels, peaks)
    alive = _merge_insignificant(
        density.log_density[peaks], density.error[peaks], saddle, saddle_err, z, labels
    )
    renumber = np.cumsum(alive) - 1
    return DensityPeakClusters(renumber[labels], peaks[alive])


def _find_peaks(knn: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Peak indices (ascending) and, per point, the densest point holding it in its knn (-1)."""
    n = len(g)
    local_max = (g[:, None] >= g[knn]).all(1)
    rows, cols = np.nonzero(g[:, None] > g[knn])  # rows[i] is denser than knn[rows, cols]
    held = knn[rows, cols]
    order = np.lexsort((-g[rows], held))  # by held point, densest holder first
    first = np.unique(held[order], return_index=True)[1]
    denser_holder = np.full(n, -1)
    denser_holder[held[order][first]] = rows[order][first]
    return np.flatnonzero(local_max & (denser_holder < 0)), denser_holder


def _assign_to_peaks(
    indices: np.ndarray, g: np.ndarray, peaks: np.ndarray, denser_holder: np.ndarray
) -> np.ndarray:
    """Cluster of each point: follow nearest denser-or-peak neighbours up to a peak."""
    n = len(g)
    rank = np.empty(n, dtype=int)
    rank[np.argsort(-g, kind="stable")] = np.arange(n)
    is_peak = np.zeros(n, dtype=bool)
    is_peak[peaks] = True
    others = indices[:, 1:]
    assigned_first = (rank[others] < rank[:, None]) | is_peak[others]
    found = assigned_first.any(1)
    parent = np.where(found, others[np.arange(n), assigned_first.argmax(1)], denser_holder)
    # A peak that was discarded because a denser point holds it in its k-neighbourhood, and
    # that has no denser point among its own maxk neighbours, joins that denser point's cluster.
    parent[peaks] = peaks
    if (parent < 0).any():
        raise RuntimeError("ADP: a point reached no density peak (inconsistent neighbours)")
    root = parent
    while True:  # pointer jumping: parents are denser, so this reaches the peaks
        nxt = root[root]
        if np.array_equal(nxt, root):
            break
        root = nxt
    cluster_of_peak = np.full(n, -1)
    cluster_of_peak[peaks] = np.arange(len(peaks))
    return cluster_of_peak[root]


def _saddles(
    neighbours: Neighbours,
    density: LogDensity,
    g: np.ndarray,
    labels: np.ndarray,
    peaks: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Log-density and error of the saddle between each pair of clusters (-inf: none)."""
    indices, k = neighbours.indices, density.k
    m = len(peaks)
    knn_labels = labels[indices[:, 1 : k + 1]]
    outside = knn_labels != labels[:, None]
    candidate = outside.any(1)
    candidate[peaks] = False
    p1 = np.flatnonzero(candidate)
    p2 = indices[p1, 1 + outside[p1].argmax(1)]
    # p1 is a border point if no point of its cluster is nearer to p2 than p1 is
    near_p2 = indices[p2, 1:]
    same = labels[near_p2] == labels[p1][:, None]
    border = ~same.any(1) | (near_p2[np.arange(len(p1)), same.argmax(1)] == p1)
    p1, p2 = p1[border], p2[border]
    c, other = labels[p1], labels[p2]
    a, b = np.minimum(c, other), np.maximum(c, other)
    order = np.lexsort((p1, c, -g[p1], b, a))  # per pair: densest first, then DADApy's order
    first = order[np.unique(np.stack([a[order], b[order]]), axis=1, return_index=True)[1]]
    saddle = np.full((m, m), -np.inf)
    saddle_err = np.zeros((m, m))
    for matrix, values in ((saddle, density.log_density), (saddle_err, density.error)):
        matrix[a[first], b[first]] = values[p1[first]]
        matrix[b[first], a[first]] = values[p1[first]]
    return saddle, saddle_err


def _merge_insignificant(
    peak: np.ndarray,
    peak_err: np.ndarray,
    saddle: np.ndarray,
    saddle_err: np.ndarray,
    z: float,
    labels: np.ndarray,
) -> np.ndarray:
    """Merge peak pairs failing the significance test; relabels in place, returns survivors."""
    m = len(peak)
    alive = np.ones(m, dtype=bool)
    upper_i, upper_j = np.triu_indices(m, 1)
    while True:
        s, e = saddle[upper_i, upper_j], saddle_err[upper_i, upper_j]
        margin_i, margin_j = peak[upper_i] - s, peak[upper_j] - s
        weak = (margin_i < z * (peak_err[upper_i] + e)) | (margin_j < z * (peak_err[upper_j] + e))
        if not weak.any():
            return alive
        pick = np.flatnonzero(weak)[np.argmax(s[weak])]
        keep, drop = upper_i[pick], upper_j[pick]
        # the peak with the smaller margin in units of error joins the other
        significance_i = margin_i[pick] / (peak_err[keep] + e[pick])
        significance_j = margin_j[pick] / (peak_err[drop] + e[pick])
        if significance_i < significance_j:
            keep, drop = drop, keep
        alive[drop] = False
        labels[labels == drop] = keep
        higher = saddle[drop] > saddle[keep]
        higher[[keep, drop]] = False
        for matrix in (saddle, saddle_err):
            matrix[keep, higher] = matrix[drop, higher]
            matrix[higher, keep] = matrix[drop, higher]
        saddle[drop, :] = saddle[:, drop] = -np.inf
        saddle_err[drop, :] = saddle_err[:, drop] = 0.0
