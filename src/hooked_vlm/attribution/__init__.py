"""Head attribution (Kim et al. 2025, in the style of COAR): masks -> store -> fit -> evaluate.

1. **masks** (:mod:`.masks`): random keep-masks over heads (1 keeps, 0 ablates), each a pure
   function of (seed, stream, index).
2. **store** (:mod:`.store`, :mod:`.evaluate`): units of work (split, example, mask chunk)
   evaluated on the model (batched, on a reused image prefix) and written by index into
   memory-mapped arrays with done markers: resumable, shardable; on any engine (this process,
   a Slurm array, Ray actors: :mod:`.jobs`, :mod:`hooked_vlm.engines`).
3. **fit** (:mod:`.fit`): y ≈ β0 + Σ β_h m_h by OLS / ridge / lasso, per example and pooled;
   held-out Pearson, Spearman and R² on fresh masks.
4. **evaluate the fit** (:mod:`.curves`, :mod:`.baselines`, :mod:`.token_level`,
   :mod:`.consistency`): faithfulness / completeness curves against leave-one-out and
   attention-weight rankings, top-k vs random-k, token-level scores, class consistency.

Beside the regression, :mod:`.atp`: attribution patching (AtP, with Kramár et al.'s AtP*
correction), every head's effect under the same ablation from one forward and one backward
per example, per head and per token.

Example:
    >>> from hooked_vlm.attribution import *
    >>> config = AttributionConfig(n_masks=2000, n_heldout=200, alpha=0.5)
    >>> evaluator = Evaluator(model, examples, config)
    >>> store = open_store("runs/coco", evaluator)
    >>> run(evaluator, store)                                   # resumes if killed
    >>> attribution, quality = fit_store(store)
    >>> quality.summary(), attribution.pooled_coef.shape        # [n_layers, n_heads]
"""

from hooked_vlm.attribution.atp import AtP, AtPExample, atp_example, attribution_patching
from hooked_vlm.attribution.baselines import (
    image_attention,
    leave_one_out,
    leave_one_out_from_store,
)
from hooked_vlm.attribution.config import AttributionConfig, ConfigError
from hooked_vlm.attribution.consistency import Consistency, class_consistency, similarity_matrix
from hooked_vlm.attribution.curves import Curves, head_curves, ranking
from hooked_vlm.attribution.evaluate import (
    Evaluator,
    MaskEvaluator,
    blank_image,
    open_store,
    run,
    run_unit,
    units,
)
from hooked_vlm.attribution.fit import (
    Attribution,
    FitQuality,
    fit_attribution,
    fit_quality,
    fit_store,
    stored_splits,
)
from hooked_vlm.attribution.jobs import AttributionJob, StoreWorker, run_job
from hooked_vlm.attribution.masks import (
    LeaveOneOutMasks,
    MaskError,
    RandomMasks,
    ReferenceMasks,
)
from hooked_vlm.attribution.store import MaskStore, StoreError, Unit, merge_stores
from hooked_vlm.attribution.targets import TARGETS, Example, Target, first_token, get_target
from hooked_vlm.attribution.token_level import (
    PositionScores,
    image_token_scores,
    query_position_scores,
    top_heads,
)
from hooked_vlm.engines import parse_shard, shard

__all__ = [
    "TARGETS",
    "AtP",
    "AtPExample",
    "Attribution",
    "AttributionConfig",
    "AttributionJob",
    "ConfigError",
    "Consistency",
    "Curves",
    "Evaluator",
    "Example",
    "FitQuality",
    "LeaveOneOutMasks",
    "MaskError",
    "MaskEvaluator",
    "MaskStore",
    "PositionScores",
    "RandomMasks",
    "ReferenceMasks",
    "StoreError",
    "StoreWorker",
    "Target",
    "Unit",
    "blank_image",
    "atp_example",
    "attribution_patching",
    "class_consistency",
    "fit_attribution",
    "fit_quality",
    "fit_store",
    "first_token",
    "get_target",
    "head_curves",
    "image_attention",
    "image_token_scores",
    "leave_one_out",
    "leave_one_out_from_store",
    "merge_stores",
    "open_store",
    "parse_shard",
    "query_position_scores",
    "ranking",
    "run",
    "run_job",
    "run_unit",
    "shard",
    "similarity_matrix",
    "stored_splits",
    "top_heads",
    "units",
]
