"""Head attribution (Kim et al. 2025, in the style of COAR): masks -> store -> fit -> evaluate.

1. **masks** (:mod:`.masks`): random keep-masks over heads (1 keeps, 0 ablates), each a pure
   function of (seed, stream, index).
2. **store** (:mod:`.store`, :mod:`.evaluate`): units of work (split, example, mask chunk)
   evaluated on the model (batched, on a reused image prefix) and written by key into
   memory-mapped arrays with checksummed done markers: resumable, shardable; on any engine
   (this process, a Slurm array, Ray actors) as the head-attribution study's ``masks`` stage
   (:func:`hooked_vlm.studies.run_study`).
3. **fit** (:mod:`.fit`): y ≈ β0 + Σ β_h m_h by OLS / ridge / lasso, per example and pooled;
   held-out Pearson, Spearman and R² on fresh masks.
4. **evaluate the fit** (:mod:`.curves`, :mod:`.baselines`, :mod:`.token_level`,
   :mod:`.consistency`): faithfulness / completeness curves against leave-one-out and
   attention-weight rankings, top-k vs random-k, token-level scores, class consistency.

Beside the regression, :mod:`.atp`: attribution patching (AtP, with Kramár et al.'s AtP*
correction), every head's effect under the same ablation from one forward and one backward
per example, per head and per token.

Names are imported on first use (PEP 562): ``AttributionConfig`` comes without torch, so the
command line can read its fields for ``--help``.

Example:
    >>> from hooked_vlm.attribution import *
    >>> config = AttributionConfig(n_masks=2000, n_heldout=200, alpha=0.5)
    >>> evaluator = Evaluator(model, examples, config)
    >>> store = open_store("runs/coco", evaluator)
    >>> run(evaluator, store)                                   # resumes if killed
    >>> attribution, quality = fit_store(store)
    >>> quality.summary(), attribution.pooled_coef.shape        # [n_layers, n_heads]
"""

from __future__ import annotations

from hooked_vlm._lazy import lazy_exports

# public name -> module that defines it
_EXPORTS = {
    "AtP": "hooked_vlm.attribution.atp",
    "AtPExample": "hooked_vlm.attribution.atp",
    "atp_example": "hooked_vlm.attribution.atp",
    "check_atp": "hooked_vlm.attribution.atp",
    "attribution_patching": "hooked_vlm.attribution.atp",
    "image_attention": "hooked_vlm.attribution.baselines",
    "leave_one_out": "hooked_vlm.attribution.baselines",
    "leave_one_out_from_store": "hooked_vlm.attribution.baselines",
    "AttributionConfig": "hooked_vlm.attribution.config",
    "Consistency": "hooked_vlm.attribution.consistency",
    "class_consistency": "hooked_vlm.attribution.consistency",
    "similarity_matrix": "hooked_vlm.attribution.consistency",
    "Curves": "hooked_vlm.attribution.curves",
    "head_curves": "hooked_vlm.attribution.curves",
    "ranking": "hooked_vlm.attribution.curves",
    "Evaluator": "hooked_vlm.attribution.evaluate",
    "MaskEvaluator": "hooked_vlm.attribution.evaluate",
    "blank_image": "hooked_vlm.attribution.evaluate",
    "evaluate_unit": "hooked_vlm.attribution.evaluate",
    "open_store": "hooked_vlm.attribution.evaluate",
    "run": "hooked_vlm.attribution.evaluate",
    "run_unit": "hooked_vlm.attribution.evaluate",
    "units": "hooked_vlm.attribution.evaluate",
    "Attribution": "hooked_vlm.attribution.fit",
    "FitQuality": "hooked_vlm.attribution.fit",
    "fit_attribution": "hooked_vlm.attribution.fit",
    "fit_quality": "hooked_vlm.attribution.fit",
    "fit_store": "hooked_vlm.attribution.fit",
    "stored_splits": "hooked_vlm.attribution.fit",
    "LeaveOneOutMasks": "hooked_vlm.attribution.masks",
    "MaskError": "hooked_vlm.attribution.masks",
    "RandomMasks": "hooked_vlm.attribution.masks",
    "ReferenceMasks": "hooked_vlm.attribution.masks",
    "MaskStore": "hooked_vlm.attribution.store",
    "merge_stores": "hooked_vlm.attribution.store",
    "parse_key": "hooked_vlm.attribution.store",
    "unit_key": "hooked_vlm.attribution.store",
    "TARGETS": "hooked_vlm.attribution.targets",
    "Example": "hooked_vlm.attribution.targets",
    "Target": "hooked_vlm.attribution.targets",
    "first_token": "hooked_vlm.attribution.targets",
    "get_target": "hooked_vlm.attribution.targets",
    "PositionScores": "hooked_vlm.attribution.token_level",
    "image_token_scores": "hooked_vlm.attribution.token_level",
    "query_position_scores": "hooked_vlm.attribution.token_level",
    "top_heads": "hooked_vlm.attribution.token_level",
    "ConfigError": "hooked_vlm.settings",
    "StoreError": "hooked_vlm.storage",
    "Shard": "hooked_vlm.engines",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
