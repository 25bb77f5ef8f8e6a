"""Pure tensor math over activations and layouts: no model is imported here.

One module per analysis of the Narrow Gate study (REFERENCE.md, "Analyses"):

- ``modality_gap``: cosine between text and image token vectors per layer (1);
- ``homogeneity``: modality homogeneity of density-peak clusters, with named presets (2);
- ``attention_flow``: text->image attention shares per image-side key, reducible in a hook (3);
- ``overlap``: neighbourhood overlap with labels, and token pickers (4);
- ``captioning`` / ``vqa``: CIDEr-D and VQA accuracy for the ablation tables (7);
- ``density_peaks``: intrinsic dimension, kNN density and ADP clustering behind (2).
"""

from hooked_vlm.analysis.attention_flow import (
    AttentionFlow,
    FlowContributions,
    cross_modal_attention,
    flow_contributions,
    flow_masks,
    image_key_values,
    injected_layers,
    key_categories,
    text_to_image_mass,
)
from hooked_vlm.analysis.captioning import CiderScore, cider_d
from hooked_vlm.analysis.density_peaks import (
    DensityPeakClusters,
    LogDensity,
    Neighbours,
    adp_clustering,
    gride_id,
    gride_id_scaling,
    knn_log_density,
    nearest_neighbours,
    twonn_id,
)
from hooked_vlm.analysis.homogeneity import (
    PRESETS,
    ClusteringPreset,
    ClusteringResult,
    Homogeneity,
    cluster_vectors,
    get_preset,
    modality_homogeneity,
)
from hooked_vlm.analysis.image_map import scatter_to_grid, to_picture, view_box
from hooked_vlm.analysis.modality_gap import (
    ModalityGap,
    ModalitySample,
    modality_gap,
    random_positions,
    sample_modality_vectors,
)
from hooked_vlm.analysis.overlap import (
    chance_overlap,
    label_overlap,
    mean_token_vector,
    token_vectors,
)
from hooked_vlm.analysis.vqa import mean_vqa_accuracy, normalize_answer, vqa_accuracy

__all__ = [
    "PRESETS",
    "AttentionFlow",
    "CiderScore",
    "ClusteringPreset",
    "ClusteringResult",
    "DensityPeakClusters",
    "FlowContributions",
    "Homogeneity",
    "LogDensity",
    "ModalityGap",
    "ModalitySample",
    "Neighbours",
    "adp_clustering",
    "chance_overlap",
    "cider_d",
    "cluster_vectors",
    "cross_modal_attention",
    "flow_contributions",
    "flow_masks",
    "injected_layers",
    "get_preset",
    "gride_id",
    "gride_id_scaling",
    "image_key_values",
    "key_categories",
    "knn_log_density",
    "label_overlap",
    "mean_token_vector",
    "mean_vqa_accuracy",
    "modality_gap",
    "modality_homogeneity",
    "nearest_neighbours",
    "normalize_answer",
    "random_positions",
    "sample_modality_vectors",
    "scatter_to_grid",
    "text_to_image_mass",
    "to_picture",
    "token_vectors",
    "twonn_id",
    "view_box",
    "vqa_accuracy",
]
