"""Interventions as hook factories: knockout, head ablation, patching, steering.

Each factory returns :class:`Hooks`, a ``[(hook_name, fn), ...]`` list for
``model.run_with_hooks``, ``model.hooks()`` and ``model.generate``, which also knows the first
position it changes, so :class:`PrefixCache` can reuse the clean prefix's keys and values.

Example:
    >>> from hooked_vlm.interventions import knockout
    >>> layout = model.layout(**inputs)
    >>> logits = model.run_with_hooks(inputs, fwd_hooks=knockout(model, layout, "text", "eoi"))
"""

from hooked_vlm.interventions._common import Hooks, InterventionError
from hooked_vlm.interventions.ablation import (
    KVBaseline,
    ablation_prefix,
    evaluate_head_masks,
    head_ablation,
    kv_baseline,
    mean_head_outputs,
)
from hooked_vlm.interventions.knockout import edge_mask, knockout
from hooked_vlm.interventions.metrics import distribution_overlap, flip_rate, logit_difference
from hooked_vlm.interventions.patching import patch, patch_sweep
from hooked_vlm.interventions.prefix import PrefixCache, last_logits, run_with_prefix
from hooked_vlm.interventions.selectors import (
    Positions,
    Selector,
    SelectorError,
    repeat_layout,
    resolve,
)
from hooked_vlm.interventions.steering import class_mean_difference, steer

__all__ = [
    "Hooks",
    "InterventionError",
    "KVBaseline",
    "Positions",
    "PrefixCache",
    "Selector",
    "SelectorError",
    "ablation_prefix",
    "class_mean_difference",
    "distribution_overlap",
    "edge_mask",
    "evaluate_head_masks",
    "flip_rate",
    "head_ablation",
    "knockout",
    "kv_baseline",
    "last_logits",
    "logit_difference",
    "mean_head_outputs",
    "patch",
    "patch_sweep",
    "repeat_layout",
    "resolve",
    "run_with_prefix",
    "steer",
]
