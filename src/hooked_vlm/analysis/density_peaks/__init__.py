"""Density-peak tools: neighbours, intrinsic dimension, kNN log-density, ADP clustering.

The estimators of DADApy (Glielmo et al. 2022), the reference implementation the Narrow Gate
authors used:

- intrinsic dimension: TwoNN (Facco et al. 2017) and Gride (Denti et al. 2022);
- the kNN log-density and its error, as DADApy's ``compute_density_kNN``;
- Advanced Density Peaks clustering (d'Errico et al. 2021, "Automatic topography of
  high-dimensional data sets by non-parametric density peak clustering"), where two peaks
  merge unless the saddle between them is lower than both by ``Z`` standard errors.

Why written by hand: DADApy 0.3.4, its newest release, requires numpy<2 plus jax 0.4.30 /
flax 0.8.5, and its shipped C sources do not compile against numpy 2, while this project needs
numpy 2 (TransformerLens -> datasets -> pyarrow 26). These modules are small, use scikit-learn
for neighbours and scipy for the rest, and are tested against DADApy's own outputs on committed
data (``scripts/dadapy_reference.py`` -> ``tests/fixtures/dadapy_reference.npz``).

Example:
    >>> nb = nearest_neighbours(x, maxk=128, metric="cosine")
    >>> dim, _ = gride_id(nb, n1=8)
    >>> clusters = adp_clustering(nb, knn_log_density(nb, dim, k=16), z=1.65)
    >>> clusters.labels, clusters.n_clusters
"""

from hooked_vlm.analysis.density_peaks.adp import DensityPeakClusters, adp_clustering
from hooked_vlm.analysis.density_peaks.density import LogDensity, knn_log_density
from hooked_vlm.analysis.density_peaks.intrinsic_dimension import (
    gride_id,
    gride_id_scaling,
    twonn_id,
)
from hooked_vlm.analysis.density_peaks.neighbours import Neighbours, nearest_neighbours

__all__ = [
    "DensityPeakClusters",
    "LogDensity",
    "Neighbours",
    "adp_clustering",
    "gride_id",
    "gride_id_scaling",
    "knn_log_density",
    "nearest_neighbours",
    "twonn_id",
]
