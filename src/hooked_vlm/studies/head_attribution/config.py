"""The head-attribution study's configuration: one frozen, typed dataclass, loadable from YAML.

The masks, ablation and target are the attribution library's own settings
(:class:`~hooked_vlm.attribution.AttributionConfig`), embedded whole as ``attribution``; their
fields may also be given at the top level (``masks: 4000``, ``alpha: 0.5``: the command line's
``--masks``, ``--alpha``). Every field that changes a number is part of the run's identity
(written to the results directory's ``config.json``): resuming (or filling a shard) with a
different identity is an error, never mixed results. Left out: ``stages`` (which parts to run
now) and ``device`` (where: shards may run on GPUs and the fit elsewhere); ``method`` and
``atp_recompute`` are in it only when attribution patching runs (a regression's identity is
what it was before they existed).

Example YAML (any field may be left out; command-line options override the file):

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
    >>> config = HeadAttributionConfig.from_dict({"model": "tiny-llava", "data": "synthetic",
    ...                                           "n": 4, "masks": 256})
    >>> config.attribution.alpha, config.identity()["attribution"]["n_masks"]
    (0.5, 256)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from hooked_vlm.attribution.config import AttributionConfig
from hooked_vlm.settings import ConfigError, check_count, check_device, check_positive
from hooked_vlm.studies.study import StudyConfig

STAGES = ("masks", "fit", "baselines", "atp", "compare", "curves", "tokens", "consistency")
ATP_RECOMPUTE_MODES = ("baseline_kv", "knockout")  # hooked_vlm.attribution.token_level.KEY_MODES
TARGET_NAMES = ("logit", "logprob", "logit_diff")  # hooked_vlm.attribution.TARGETS


def _study_attribution() -> AttributionConfig:
    """The study's defaults: the library's, with every head also ablated alone."""
    return AttributionConfig(leave_one_out=True)


@dataclass(frozen=True)
class HeadAttributionConfig(StudyConfig):
    """Everything a head-attribution run depends on (REFERENCE.md, Paper 2).

    Attributes:
        model: model-config name, local save_pretrained directory or HF hub id.
        data: hub id, local folder/file or "synthetic".
        split: the data's split, where its default is not the one wanted.
        model_config: model-config name or YAML path for a local model (prompt templates).
        task: classify (Kim et al.: the answer is the label's first token), vqa (the most
            common answer's) or caption (the first reference caption's); the model config's
            template of that task is the prompt.
        n: examples (the first n of a permutation seeded by seed).
        method: regression (Kim et al.: random multi-head masks and a linear fit), atp
            (attribution patching only: one forward and one backward per example and the
            curves of its rankings; no masks, so no fit, baselines, token ablations or
            consistency) or both (AtP compared with β and leave-one-out, and its rankings in
            the curves).
        atp_recompute: heads whose attention AtP* recomputes exactly, per example: the ones
            with the largest linear estimate (default: every head).
        attribution: masks, ablation and target (the attribution library's settings, also
            seeding the examples, the random-k heads and the image-token subsets).
        regression: ols (COAR), ridge or lasso.
        regularization: the strength of ridge or lasso (default: sklearn's).
        top_k: head counts of the faithfulness/completeness curves (default: 1, 2, 4, ...,
            every head).
        n_random: random head sets per k for the random-k control.
        token_examples: examples of the token-level stage (the first ones).
        token_heads: top heads of each example the token level ablates (default: 10% of the
            heads).
        image_subsets, image_heldout: random image-token subsets ablated in the top heads, and
            fresh ones that score that fit.
        image_alpha: probability each image token is ablated in a subset.
        consistency_metric: similarity of attribution vectors: cosine or pearson.
        permutations: label permutations of the consistency test.
        device: where the model runs: cpu, cuda, cuda:1, mps.
        dtype: precision: float32, bf16, fp16 (default: the model's).
        stages: stages to run now, names or numbers 1-8 (default: all that the method
            runs): masks, fit, baselines, atp, compare, curves, tokens, consistency.
    """

    STUDY: ClassVar[str] = "head-attribution"
    STAGES: ClassVar[tuple[str, ...]] = STAGES
    NOT_IDENTITY: ClassVar[tuple[str, ...]] = ("stages", "device")

    model: str
    data: str
    split: str | None = None
    model_config: str | None = None
    task: Literal["classify", "vqa", "caption"] = "classify"
    n: int = 64
    method: Literal["regression", "atp", "both"] = "regression"
    atp_recompute: int | None = None
    attribution: AttributionConfig = field(default_factory=_study_attribution)
    regression: Literal["ols", "ridge", "lasso"] = "ols"
    regularization: float | None = None
    top_k: tuple[int, ...] | None = None
    n_random: int = 5
    token_examples: int = 4
    token_heads: int | None = None
    image_subsets: int = 256
    image_heldout: int = 64
    image_alpha: float = 0.5
    consistency_metric: Literal["cosine", "pearson"] = "cosine"
    permutations: int = 1000
    device: str = "cpu"
    dtype: str | None = None
    stages: str | tuple[str | int, ...] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for k in self.top_k or ():
            check_positive("top_k entries", k)
        if self.top_k is not None and not self.top_k:
            raise ConfigError("top_k is empty: give head counts, e.g. [1, 2, 4]")
        for name in ("n", "n_random", "image_subsets", "permutations"):
            check_positive(name, getattr(self, name))
        for name in ("token_examples", "image_heldout"):
            check_count(name, getattr(self, name))
        if self.token_heads is not None:
            check_positive("token_heads", self.token_heads)
        if self.atp_recompute is not None:
            check_count("atp_recompute", self.atp_recompute)
            if self.method == "regression":
                raise ConfigError("atp_recompute is a setting of attribution patching: give "
                                  "method atp or both (or leave atp_recompute out)")
            if self.attribution.mode not in ATP_RECOMPUTE_MODES:
                raise ConfigError(
                    f"atp_recompute: mode {self.attribution.mode!r} ablates the head output "
                    "itself, where AtP's linear estimate is already exact and AtP* has nothing "
                    f"to recompute; leave atp_recompute out, or use mode "
                    f"{' or '.join(ATP_RECOMPUTE_MODES)}")
        check_device(self.device)
        if self.attribution.target not in TARGET_NAMES:
            raise ConfigError(f"target must be one of {', '.join(TARGET_NAMES)}; got "
                              f"{self.attribution.target!r}")
        if self.regression == "ols" and self.regularization is not None:
            raise ConfigError("regression 'ols' takes no regularization (use 'ridge' or 'lasso')")
        if self.regularization is not None and self.regularization <= 0:
            raise ConfigError(f"regularization must be > 0, got {self.regularization}")
        if not 0 < self.image_alpha < 1:
            raise ConfigError(f"image_alpha is an ablation probability in (0, 1), got "
                              f"{self.image_alpha}")

    def identity(self) -> dict[str, Any]:
        """As every study's, but ``method`` and ``atp_recompute`` only when attribution
        patching runs: a regression's identity (and so its results directory) is what it was
        before AtP existed. The method is part of it: the curves' units hold the method's
        rankings, so one directory holds one method."""
        values = super().identity()
        if self.method == "regression":
            values.pop("method")
            values.pop("atp_recompute")
        return values

    @property
    def seed(self) -> int:
        """The seed of the examples, masks, random-k heads and image-token subsets."""
        return self.attribution.seed


def runs_with(*methods: str) -> Callable[[Any], str | None]:
    """A stage's ``skip``: why the session's ``method`` leaves the stage out (None: it runs).

    Example:
        >>> Stage("masks", ..., skip=runs_with("regression", "both"))
    """

    def skip(session: Any) -> str | None:
        method = session.config.method
        if method in methods:
            return None
        return f"method {method!r} leaves it out (it runs with method {' or '.join(methods)})"

    return skip
