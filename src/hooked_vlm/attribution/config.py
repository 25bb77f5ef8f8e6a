"""The settings of one head-attribution run: what every unit of work is a pure function of.

Kim et al. do not publish alpha, N, the regression or the fit figures (REFERENCE.md, Paper 2),
so every choice is a field here and is written with the results (``to_json``).

Example:
    >>> config = AttributionConfig(n_masks=4000, alpha=0.5, mode="baseline_kv", baseline="mean")
    >>> config.splits(n_layers=32, n_heads=32)["train"].masks(0, 8).shape   # (8, 32, 32)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from hooked_vlm.attribution.masks import (
    LeaveOneOutMasks,
    MaskSet,
    RandomMasks,
    ReferenceMasks,
)
from hooked_vlm.interventions.ablation import ABLATION_MODES

BASELINES = ("mean", "blank", "zeros")


class ConfigError(ValueError):
    """An attribution setting that is not accepted."""


@dataclass(frozen=True)
class AttributionConfig:
    """Masks, ablation and target of a run.

    - ``n_masks`` training masks and ``n_heldout`` fresh masks (another seed stream) to score
      the fit; each head is ablated with probability ``alpha``, or exactly ``k`` heads are.
    - ``mode``: how a head is ablated (:func:`hooked_vlm.interventions.head_ablation`):
      ``"baseline_kv"`` (default: the head's image keys/values, as its ``queries`` see them,
      replaced by ``baseline``: ``"mean"`` over the dataset's images, a ``"blank"`` image's,
      or ``"zeros"``), ``"zero"`` / ``"mean"`` (the head's output at ``queries``), or
      ``"knockout"`` (−inf on ``queries`` → ``keys`` edges).
    - ``target``: a name from :data:`~hooked_vlm.attribution.targets.TARGETS`, or a custom
      target's name (pass the :class:`~hooked_vlm.attribution.targets.Target` to the runner).
    - ``chunk_size`` masks make one unit of work, run ``batch_size`` per forward.
    - ``leave_one_out``: also evaluate every single-head ablation (a baseline ranking).
    """

    n_masks: int = 2000
    n_heldout: int = 200
    alpha: float | None = 0.5
    k: int | None = None
    seed: int = 0
    mode: str = "baseline_kv"
    baseline: str = "mean"
    target: str = "logit"
    queries: str = "text_after_image"
    keys: str = "image"
    chunk_size: int = 64
    batch_size: int = 16
    leave_one_out: bool = False
    reuse_prefix: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ABLATION_MODES:
            raise ConfigError(f"mode {self.mode!r} is not one of {', '.join(ABLATION_MODES)}.")
        if self.baseline not in BASELINES:
            raise ConfigError(
                f"baseline {self.baseline!r} is not one of {', '.join(BASELINES)} (used by "
                "mode 'baseline_kv')."
            )
        if self.chunk_size < 1 or self.batch_size < 1:
            raise ConfigError(
                f"chunk_size and batch_size must be >= 1, got {self.chunk_size}, "
                f"{self.batch_size}."
            )
        if self.n_masks < 1 or self.n_heldout < 0:
            raise ConfigError(
                f"need n_masks >= 1 and n_heldout >= 0, got {self.n_masks}, {self.n_heldout}."
            )
        if not isinstance(self.queries, str) or not isinstance(self.keys, str):
            raise ConfigError(
                "queries and keys must be selector names here (e.g. 'text_after_image', "
                "'image'): explicit positions would not be a pure function of the config."
            )
        # validates alpha / k (k against the heads once the model is known: splits())
        RandomMasks(1, max(1, self.k or 1), 0, self.alpha, self.k)

    def splits(self, n_layers: int, n_heads: int) -> dict[str, MaskSet]:
        """The mask sets of this run, by split name: ``train``, ``heldout``, ``reference``
        (all kept, all ablated) and, with ``leave_one_out``, ``loo``."""
        train = RandomMasks(n_layers, n_heads, self.n_masks, self.alpha, self.k, self.seed)
        out: dict[str, MaskSet] = {
            "train": train,
            "heldout": train.held_out(self.n_heldout),
            "reference": ReferenceMasks(n_layers, n_heads),
        }
        if self.leave_one_out:
            out["loo"] = LeaveOneOutMasks(n_layers, n_heads)
        return {name: masks for name, masks in out.items() if masks.size}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AttributionConfig:
        return cls(**data)
