"""The head-attribution study (REFERENCE.md, Paper 2; Kim et al. 2025): which attention heads
carry image information to the text? Six stages, then one HTML report.

===============  ============================================================================
stage            what it does (library call)
===============  ============================================================================
``masks``        the target under N random head masks, held-out, reference and single-head
                 masks per example, into a resumable, shardable store (``attribution``)
``fit``          y ≈ β0 + Σ β_h m_h per example and pooled; held-out Pearson, Spearman, R²
``baselines``    leave-one-out drops and attention weight on the image; agreement with β
``curves``       faithfulness / completeness of top-k heads per ranking, top-k vs random-k
``tokens``       inside the top heads: text query positions and image tokens (on the picture)
``consistency``  similarity of attributions within vs across classes
===============  ============================================================================

Example:
    >>> from hooked_vlm.studies import run_study
    >>> from hooked_vlm.studies.head_attribution import HEAD_ATTRIBUTION, HeadAttributionConfig
    >>> config = HeadAttributionConfig.from_dict({"model": "tiny-llava", "data": "synthetic",
    ...                                           "n": 4, "masks": 256})
    >>> summary = run_study(HEAD_ATTRIBUTION, config, "results/ha")    # resumes if killed
    >>> run_study(HEAD_ATTRIBUTION, config, "results/ha", shard="0/4")  # a Slurm array task
    >>> run_study(HEAD_ATTRIBUTION, config, "results/ha",               # units on a Ray cluster
    ...           engine=RayEngine(address="auto"))
"""

from hooked_vlm.studies.head_attribution.config import STAGES, HeadAttributionConfig
from hooked_vlm.studies.head_attribution.report import write_report
from hooked_vlm.studies.head_attribution.session import HeadAttributionSession
from hooked_vlm.studies.head_attribution.stage_baselines import BASELINES
from hooked_vlm.studies.head_attribution.stage_consistency import CONSISTENCY
from hooked_vlm.studies.head_attribution.stage_curves import CURVES
from hooked_vlm.studies.head_attribution.stage_fit import FIT
from hooked_vlm.studies.head_attribution.stage_masks import MASKS
from hooked_vlm.studies.head_attribution.stage_tokens import TOKENS
from hooked_vlm.studies.study import Study

HEAD_ATTRIBUTION = Study(
    "head-attribution", HeadAttributionConfig, HeadAttributionSession,
    (MASKS, FIT, BASELINES, CURVES, TOKENS, CONSISTENCY), write_report,
    "Head attribution (Kim et al. 2025): which heads carry image information to the text. "
    "Random multi-head ablations into a resumable store, a linear fit scored on held-out masks, "
    "leave-one-out and attention-weight baselines, faithfulness/completeness and top-k vs "
    "random-k, text positions and image tokens inside the top heads, class consistency.",
)
assert tuple(HEAD_ATTRIBUTION.stage_names()) == STAGES

__all__ = ["HEAD_ATTRIBUTION", "STAGES", "HeadAttributionConfig", "HeadAttributionSession",
           "write_report"]
