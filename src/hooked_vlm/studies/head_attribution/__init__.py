"""The head-attribution study (REFERENCE.md, Paper 2; Kim et al. 2025): which attention heads
carry image information to the text? Eight stages (those ``method`` runs: regression, atp or
both), then one HTML report.

===============  ============================================================================
stage            what it does (library call)
===============  ============================================================================
``masks``        (regression, both; so are fit, baselines, tokens, consistency)
                 the target under N random head masks, held-out, reference and single-head
                 masks per example, into a resumable, shardable store (``attribution``)
``fit``          y ≈ β0 + Σ β_h m_h per example and pooled; held-out Pearson, Spearman, R²
``baselines``    leave-one-out drops and attention weight on the image; agreement with β
``atp``          (atp, both) attribution patching: AtP and AtP* of every head per example,
                 one forward and one backward each (``attribution_patching``)
``compare``      (both) AtP and AtP* against β and leave-one-out: Spearman, top-k overlap
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
from __future__ import annotations

from hooked_vlm._lazy import lazy_exports

_EXPORTS = {
    "HEAD_ATTRIBUTION": "hooked_vlm.studies.head_attribution.study",
    "HeadAttributionConfig": "hooked_vlm.studies.head_attribution.config",
    "STAGES": "hooked_vlm.studies.head_attribution.config",
    "HeadAttributionSession": "hooked_vlm.studies.head_attribution.session",
    "write_report": "hooked_vlm.studies.head_attribution.report",
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
