"""The head-attribution study (REFERENCE.md, Paper 2; Kim et al. 2025): which attention heads
carry image information to the text? Six stages, then one HTML report.

===============  ============================================================================
stage            what it does (library call)
===============  ============================================================================
``masks``        the target under N random head masks, held-out, reference and single-head
                 masks per example, into a resumable, shardable store (``attribution.run``)
``fit``          y ≈ β0 + Σ β_h m_h per example and pooled; held-out Pearson, Spearman, R²
``baselines``    leave-one-out drops and attention weight on the image; agreement with β
``curves``       faithfulness / completeness of top-k heads per ranking, top-k vs random-k
``tokens``       inside the top heads: text query positions and image tokens (on the picture)
``consistency``  similarity of attributions within vs across classes
===============  ============================================================================

Example:
    >>> from hooked_vlm.studies.head_attribution import HeadAttributionConfig, run_head_attribution
    >>> config = HeadAttributionConfig(model="tiny-llava", data="synthetic", n=4, masks=256)
    >>> summary = run_head_attribution(config, "results/ha")      # resumes if killed
    >>> run_head_attribution(config, "results/ha", shard="0/4")    # a Slurm array task
    >>> run_head_attribution(config, "results/ha", fit_only=True)  # once every shard is in
    >>> run_head_attribution(config, "results/ha",                 # masks on a Ray cluster
    ...                      engine=OnEngine(RayEngine(address="auto")))
"""

from hooked_vlm.studies.common import ConfigError
from hooked_vlm.studies.head_attribution.config import (
    STAGES,
    HeadAttributionConfig,
    parse_stages,
)
from hooked_vlm.studies.head_attribution.report import write_report
from hooked_vlm.studies.head_attribution.runner import run_head_attribution
from hooked_vlm.studies.head_attribution.session import Session
from hooked_vlm.studies.head_attribution.stage_masks import (
    Engine,
    MasksJob,
    OnEngine,
    fill_store,
    mask_work,
)

__all__ = [
    "STAGES",
    "ConfigError",
    "Engine",
    "HeadAttributionConfig",
    "MasksJob",
    "OnEngine",
    "Session",
    "fill_store",
    "mask_work",
    "parse_stages",
    "run_head_attribution",
    "write_report",
]
