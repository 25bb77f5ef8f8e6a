"""The settings of one head-attribution run: what every unit of work is a pure function of.

Kim et al. do not publish alpha, N, the regression or the fit figures (REFERENCE.md, Paper 2),
so every choice is a field here and is written with the results (``to_json``). The fields are
typed (:class:`~hooked_vlm.settings.Settings`): a YAML ``leave_one_out: "false"`` is refused,
not truthy. The head-attribution study embeds this config whole.

Example:
    >>> config = AttributionConfig(n_masks=4000, alpha=0.5, mode="baseline_kv", baseline="mean")
    >>> config.splits(n_layers=32, n_heads=32)["train"].masks(0, 8).shape   # (8, 32, 32)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal

from hooked_vlm.attribution.masks import (
    LeaveOneOutMasks,
    MaskSet,
    RandomMasks,
    ReferenceMasks,
)
from hooked_vlm.settings import ConfigError, Settings, check_count, check_positive

BASELINES = ("mean", "blank", "zeros")
DEFAULT_ALPHA = 0.5


@dataclass(frozen=True)
class AttributionConfig(Settings):
    """Masks, ablation and target of a run.

    Attributes:
        n_masks: random head masks per example (the training set of the fit).
        n_heldout: fresh masks (another seed stream) that score the fit.
        alpha: probability each head is ablated in a mask (default 0.5 unless k is given).
        k: ablate exactly k heads per mask instead (give alpha or k).
        seed: seeds the masks.
        mode: how a head is ablated: baseline_kv (its image keys/values, as its queries see
            them, replaced by the baseline), zero or mean (its output at the queries), knockout
            (-inf on query -> key edges).
        baseline: the keys/values of mode baseline_kv: mean over the dataset's images, a blank
            image's, or zeros.
        target: logit (of the answer's first token), logprob or logit_diff, or the name of a
            custom target.
        queries, keys: the positions the ablation cuts (selector names: the text after the
            image reading the image tokens by default).
        chunk_size: masks per unit of work.
        batch_size: masks per forward.
        leave_one_out: also ablate every head alone (the single-head baseline ranking).
        reuse_prefix: compute each example's image prefix once and reuse it for every mask.
    """

    ALIASES: ClassVar[dict[str, str]] = {"masks": "n_masks", "heldout": "n_heldout"}
    EXCLUSIVE: ClassVar[tuple[tuple[str, str], ...]] = (("alpha", "k"), ("k", "alpha"))

    n_masks: int = 2000
    n_heldout: int = 200
    alpha: float | None = None
    k: int | None = None
    seed: int = 0
    mode: Literal["baseline_kv", "zero", "mean", "knockout"] = "baseline_kv"
    baseline: Literal["mean", "blank", "zeros"] = "mean"
    target: str = "logit"
    queries: str = "text_after_image"
    keys: str = "image"
    chunk_size: int = 64
    batch_size: int = 16
    leave_one_out: bool = False
    reuse_prefix: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.alpha is None and self.k is None:
            object.__setattr__(self, "alpha", DEFAULT_ALPHA)
        for name in ("n_masks", "chunk_size", "batch_size"):
            check_positive(name, getattr(self, name))
        check_count("n_heldout", self.n_heldout)
        check_count("seed", self.seed)
        if self.k is not None and self.k < 1:
            raise ConfigError(f"k must be >= 1 (k = {self.k} never ablates a head: every mask "
                              "would be the clean model and every attribution 0)")
        # validates alpha / k (k against the heads once the model is known: splits())
        RandomMasks(1, max(1, self.k or 1), 0, self.alpha, self.k)

    def splits(self, n_layers: int, n_heads: int) -> dict[str, MaskSet]:
        """The mask sets of this run, by split name: ``train``, ``heldout``, ``reference``
        (all kept, all ablated) and, with ``leave_one_out``, ``loo``. Raises
        :class:`ConfigError` for a ``k`` the model cannot serve."""
        heads = n_layers * n_heads
        if self.k is not None and self.k >= heads:
            raise ConfigError(f"k = {self.k}: the model has {heads} heads ({n_layers} layers x "
                              f"{n_heads}); ablating all of them in every mask leaves nothing "
                              f"to attribute: give k < {heads}")
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
        return cls.from_dict(data)
