"""The head-attribution study's configuration: one frozen dataclass, loadable from YAML.

Every field that changes a number is part of the run's identity (:meth:`HeadAttributionConfig.
identity`), written to the results directory's ``config.json``: resuming (or filling a shard,
or fitting) with a different identity is an error, never mixed results. Left out: ``stages``
(which parts to run now) and ``device`` (where: shards may run on GPUs and the fit elsewhere).

Example YAML (any field may be left out; CLI options override the file):

.. code-block:: yaml

    model: llava-1.5-7b
    data: yerevann/coco-karpathy
    n: 500
    masks: 4000
    heldout: 400
    alpha: 0.5
    regression: ols
    device: cuda

Example:
    >>> config = HeadAttributionConfig(model="tiny-llava", data="synthetic", n=4, masks=256)
    >>> config.attribution().alpha, config.identity()["masks"]
    (0.5, 256)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from hooked_vlm.studies.common import ConfigError, StudyConfig, check_count, check_positive
from hooked_vlm.studies.common import parse_stages as select_stages

STAGES = ("masks", "fit", "baselines", "curves", "tokens", "consistency")
# what each stage reads of the others (added to a run that names the stage)
STAGE_NEEDS: dict[str, tuple[str, ...]] = {
    "fit": ("masks",), "baselines": ("fit",), "curves": ("fit", "baselines"),
    "tokens": ("fit",), "consistency": ("fit",),
}
TASKS = ("classify", "vqa", "caption")
TARGET_NAMES = ("logit", "logprob", "logit_diff")  # hooked_vlm.attribution.TARGETS
DEFAULT_ALPHA = 0.5
REGRESSIONS = ("ols", "ridge", "lasso")
METRICS = ("cosine", "pearson")


@dataclass(frozen=True)
class HeadAttributionConfig(StudyConfig):
    """Everything a head-attribution run depends on (REFERENCE.md, Paper 2).

    Attributes:
        model: model-config name, local ``save_pretrained`` directory or HF hub id.
        data: hub id, local folder/file or "synthetic"; ``split`` where the default is not it.
        model_config: model-config name or YAML path for a local model (prompt templates).
        task: "classify" (Kim et al.: the answer is the label's first token), "vqa" (the most
            common answer's) or "caption" (the first reference caption's); the model config's
            template of that task is the prompt.
        n: examples (the first n of a permutation seeded by ``seed``).
        seed: seeds the examples, the masks, the random-k heads and the image-token subsets.
        masks, heldout: training masks per example, and fresh masks that score the fit.
        alpha, k: each head is ablated with probability ``alpha``, or exactly ``k`` heads are
            (give one; neither: alpha 0.5).
        mode, baseline: how a head is ablated (``hooked_vlm.attribution.AttributionConfig``):
            "baseline_kv" with a "mean" / "blank" / "zeros" baseline, "zero", "mean",
            "knockout".
        queries, keys: the positions the ablation cuts (default: text after the image reading
            the image tokens).
        target: "logit" (Kim et al.), "logprob" or "logit_diff" (against another class of the
            data, drawn per example by ``seed``).
        regression, regularization: "ols" (COAR), "ridge" or "lasso", and its strength.
        leave_one_out: also ablate every head alone (the single-head baseline ranking).
        top_k: head counts of the faithfulness/completeness curves (None: 1, 2, 4, ..., all).
        n_random: random head sets per k for the random-k control.
        token_examples: examples of the token-level stage (the first ones).
        token_heads: top heads of each example the token level ablates (None: 10% of heads).
        image_subsets, image_heldout, image_alpha: random image-token subsets, each token
            ablated with probability ``image_alpha``, and fresh ones that score that fit.
        consistency_metric, permutations: similarity of attribution vectors ("cosine",
            "pearson") and the permutations of the label test.
        chunk_size, batch_size: masks per work unit and per forward.
        reuse_prefix: compute each example's image prefix once and reuse it for every mask.
        device, dtype: where and in what precision the model runs (dtype None: the model's).
        stages: which stages to run now (None: all).
    """

    STUDY: ClassVar[str] = "head-attribution"
    NOT_IDENTITY: ClassVar[tuple[str, ...]] = ("stages", "device")
    EXCLUSIVE: ClassVar[tuple[tuple[str, str], ...]] = (("alpha", "k"), ("k", "alpha"))

    model: str
    data: str
    split: str | None = None
    model_config: str | None = None
    task: str = "classify"
    n: int = 64
    seed: int = 0
    masks: int = 2000
    heldout: int = 200
    alpha: float | None = None
    k: int | None = None
    mode: str = "baseline_kv"
    baseline: str = "mean"
    queries: str = "text_after_image"
    keys: str = "image"
    target: str = "logit"
    regression: str = "ols"
    regularization: float | None = None
    leave_one_out: bool = True
    top_k: tuple[int, ...] | None = None
    n_random: int = 5
    token_examples: int = 4
    token_heads: int | None = None
    image_subsets: int = 256
    image_heldout: int = 64
    image_alpha: float = 0.5
    consistency_metric: str = "cosine"
    permutations: int = 1000
    chunk_size: int = 64
    batch_size: int = 16
    reuse_prefix: bool = True
    device: str = "cpu"
    dtype: str | None = None
    stages: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.alpha is None and self.k is None:
            object.__setattr__(self, "alpha", DEFAULT_ALPHA)
        if self.top_k is not None:
            if isinstance(self.top_k, (str, int)):
                raise ConfigError(f"top_k must be a list of head counts, got {self.top_k!r}")
            object.__setattr__(self, "top_k", tuple(self.top_k))
            for k in self.top_k:
                check_positive("top_k entries", k)
        if self.stages is not None:
            object.__setattr__(self, "stages", tuple(parse_stages(self.stages)))
        for name in ("n", "masks", "chunk_size", "batch_size", "n_random", "image_subsets",
                     "permutations"):
            check_positive(name, getattr(self, name))
        for name in ("heldout", "token_examples", "image_heldout", "seed"):
            check_count(name, getattr(self, name))
        if self.token_heads is not None:
            check_positive("token_heads", self.token_heads)
        _choice("task", self.task, TASKS)
        _choice("target", self.target, TARGET_NAMES)
        _choice("regression", self.regression, REGRESSIONS)
        _choice("consistency_metric", self.consistency_metric, METRICS)
        if self.regression == "ols" and self.regularization is not None:
            raise ConfigError("regression 'ols' takes no regularization (use 'ridge' or 'lasso')")
        if not 0 < self.image_alpha < 1:
            raise ConfigError(f"image_alpha is an ablation probability in (0, 1), got "
                              f"{self.image_alpha}")
        self.attribution()  # validates alpha / k, mode, baseline, selectors

    def attribution(self) -> Any:
        """The :class:`hooked_vlm.attribution.AttributionConfig` of the mask stage."""
        from hooked_vlm.attribution.config import AttributionConfig

        try:
            return AttributionConfig(
                n_masks=self.masks, n_heldout=self.heldout, alpha=self.alpha, k=self.k,
                seed=self.seed, mode=self.mode, baseline=self.baseline, target=self.target,
                queries=self.queries, keys=self.keys, chunk_size=self.chunk_size,
                batch_size=self.batch_size, leave_one_out=self.leave_one_out,
                reuse_prefix=self.reuse_prefix,
            )
        except ValueError as err:  # ConfigError and MaskError of the attribution package
            raise ConfigError(str(err)) from None


def parse_stages(stages: str | Sequence[str | int]) -> list[str]:
    """Stage names from names or numbers 1-6 (``"fit,curves"``, ``[2, 4]``), in study order.

    Example:
        >>> parse_stages("curves,1")
        ['masks', 'curves']
    """
    return select_stages(stages, STAGES)


def _choice(name: str, value: object, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
