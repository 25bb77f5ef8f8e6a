"""Homogeneity of density-peak clusters w.r.t. modality (Narrow Gate, analysis 2).

The text and image vectors of one layer are stacked and clustered with Advanced Density Peaks;
the score is scikit-learn's ``homogeneity_score`` of the clusters w.r.t. the modality label:
1 when no cluster mixes text and image vectors, 0 when every cluster has both in the overall
proportion. How the clustering is set up is a named preset (``PRESETS``):

- ``"neurips"`` (NeurIPS 2025 version): cosine distances, maxk = 128, intrinsic dimension by
  Gride at scale ``n1 = 8`` (the Narrow Gate code's ``return_id_scaling_gride(range_max=128)[3]``),
  kNN density with k = 16, ADP with Z = 1.65.
- ``"v1"`` (arXiv v1): L2-normalised vectors, Euclidean distances, DADApy's default maxk = 100,
  the same Gride scale, k = 15, Z = 1.2.

``maxk`` is capped at ``n - 1`` for small sets, as DADApy does.

Example:
    >>> sample = sample_modality_vectors(resid, layout.mask("text"), layout.mask("image"))
    >>> [modality_homogeneity(sample.text[l], sample.image[l]).score for l in range(n_layers)]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from sklearn.metrics import homogeneity_score

from hooked_vlm.analysis.density_peaks import (
    DensityPeakClusters,
    adp_clustering,
    gride_id,
    knn_log_density,
    nearest_neighbours,
)
from hooked_vlm.analysis.density_peaks.neighbours import Metric, as_points


@dataclass(frozen=True)
class ClusteringPreset:
    """How one layer's vectors are clustered with Advanced Density Peaks."""

    name: str
    metric: Metric
    l2_normalise: bool  # project the vectors onto the unit sphere first
    maxk: int  # neighbours kept for assignment and saddles (capped at n - 1)
    gride_n1: int  # intrinsic dimension from the Gride ratio r_{2 n1} / r_{n1}
    density_k: int  # neighbours of the kNN density and of the peak search
    z: float  # ADP significance threshold


NEURIPS = ClusteringPreset("neurips", "cosine", False, 128, 8, 16, 1.65)
V1 = ClusteringPreset("v1", "euclidean", True, 100, 8, 15, 1.2)
PRESETS: dict[str, ClusteringPreset] = {p.name: p for p in (NEURIPS, V1)}


def get_preset(preset: str | ClusteringPreset) -> ClusteringPreset:
    """The preset itself, or the registered one of that name."""
    if isinstance(preset, ClusteringPreset):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"unknown clustering preset {preset!r}; registered: {sorted(PRESETS)}")
    return PRESETS[preset]


@dataclass(frozen=True)
class ClusteringResult:
    """ADP clusters of a set of vectors and the intrinsic dimension used for their density."""

    clusters: DensityPeakClusters
    intrinsic_dim: float


def cluster_vectors(
    x: Float[np.ndarray, "n d"] | Float[torch.Tensor, "n d"],
    preset: str | ClusteringPreset = "neurips",
) -> ClusteringResult:
    """ADP clusters of ``x`` under ``preset`` (neighbours -> Gride ID -> kNN density -> ADP)."""
    p = get_preset(preset)
    points = as_points(x)
    need = max(2 * p.gride_n1, p.density_k)
    if len(points) <= need:
        raise ValueError(
            f"preset {p.name!r} needs more than {need} points (Gride at n2 = {2 * p.gride_n1}, "
            f"density k = {p.density_k}); got {len(points)}"
        )
    if p.l2_normalise:
        norms = np.linalg.norm(points, axis=1, keepdims=True)
        if (norms == 0).any():
            raise ValueError("cannot L2-normalise: some vectors are all zeros")
        points = points / norms
    neighbours = nearest_neighbours(points, min(p.maxk, len(points) - 1), p.metric)
    dim, _ = gride_id(neighbours, p.gride_n1)
    density = knn_log_density(neighbours, dim, p.density_k)
    return ClusteringResult(adp_clustering(neighbours, density, p.z), dim)


@dataclass(frozen=True)
class Homogeneity:
    """Homogeneity score, the clustering it came from, and the modality labels (1 = text)."""

    score: float
    clustering: ClusteringResult
    modality: np.ndarray


def modality_homogeneity(
    text: Float[np.ndarray, "n_text d"] | Float[torch.Tensor, "n_text d"],
    image: Float[np.ndarray, "n_image d"] | Float[torch.Tensor, "n_image d"],
    preset: str | ClusteringPreset = "neurips",
) -> Homogeneity:
    """Homogeneity of the ADP clusters of ``[text; image]`` w.r.t. the modality label."""
    text, image = as_points(text), as_points(image)
    if text.shape[1] != image.shape[1]:
        raise ValueError(f"text vectors have d = {text.shape[1]}, image vectors {image.shape[1]}")
    modality = np.concatenate([np.ones(len(text), dtype=int), np.zeros(len(image), dtype=int)])
    clustering = cluster_vectors(np.vstack([text, image]), preset)
    score = float(homogeneity_score(modality, clustering.clusters.labels))
    return Homogeneity(score, clustering, modality)
