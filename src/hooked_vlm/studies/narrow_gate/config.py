"""The Narrow Gate study's configuration: one frozen dataclass, loadable from YAML.

Every field that changes a number is part of the run's identity (:meth:`NarrowGateConfig.identity`),
written to the results directory's ``config.json``: resuming with a different identity is an
error, never mixed results. Only ``stages`` (which parts to run now) is left out, so stages can
be added to an existing run later.

Example YAML (any field may be left out; CLI options override the file):

.. code-block:: yaml

    model: chameleon-7b
    data: {caption: nlphuji/flickr30k, vqa: lmms-lab/VQAv2, classify: ILSVRC/imagenet-1k}
    n: 2000
    device: cuda
    knockout_modes: [zero, mask]
    steering_scales: [0, 1, 2, 4, 8]

Example:
    >>> config = NarrowGateConfig.from_yaml("study.yaml").replace(n=64, device="cpu")
    >>> config.identity()["n"]
    64
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from hooked_vlm.studies.common import (
    ConfigError,
    StudyConfig,
    check_count,
    check_positive,
)
from hooked_vlm.studies.common import parse_stages as select_stages

TASKS = ("caption", "vqa", "classify")
STAGES = ("gap", "flow", "overlap", "knockout", "progressive", "patching", "steering")
# the data each stage reads (stage 4 reads what it has: it needs at least one of them)
STAGE_TASKS: dict[str, tuple[str, ...]] = {
    "gap": ("caption",), "flow": ("caption",), "overlap": ("classify",),
    "knockout": TASKS, "progressive": ("classify",), "patching": ("classify",),
    "steering": ("classify",),
}
# steering adds class-mean differences of the gate residuals that stage "overlap" collects
STAGE_NEEDS: dict[str, tuple[str, ...]] = {"steering": ("overlap",)}
KNOCKOUT_MODES = ("zero", "mask")
CIDER_TOKENIZERS = ("ptb", "simple")


@dataclass(frozen=True)
class NarrowGateConfig(StudyConfig):
    """Everything a Narrow Gate run depends on (REFERENCE.md, Paper 1, analyses 1-7).

    Attributes:
        model: model-config name, local ``save_pretrained`` directory or HF hub id.
        data: one source for every task, or ``{task: source}`` for tasks "caption", "vqa",
            "classify" (hub id, local folder/file, or "synthetic"); a task left out is skipped.
        splits: ``{task: split}`` where the source's default split is not wanted.
        model_config: model-config name or YAML path for a local model (prompt templates,
            special tokens, class names); hub ids and config names find theirs.
        n: examples per task (the first n of a permutation seeded by ``seed``).
        seed: seeds the examples, random positions, random knockout keys, pairs and targets.
        batch_size: examples per forward, and per work unit (so it is part of the identity).
        device, dtype: where and in what precision the model runs (dtype None: the model's).
        layers: layers of the per-layer analyses and sweeps (None: all).
        knockout_modes: "zero" (post-softmax, the paper's code) and/or "mask" (-inf).
        random_k, random_repeats: the random-image-token control: k tokens, repeats averaged.
        progressive_windows: knock out only the last w layers, for each w (None: 1..L).
        patch_pairs: (source, target) image pairs of different classes for EOI patching.
        steering_scales, steering_layers: steering strengths and layers (None: the middle one).
        overlap_k: neighbours of the label overlap (capped per run, the cap is recorded).
        overlap_class_balanced: weigh classes equally in the overlap (DADApy's default).
        caption_tokens, vqa_tokens: new tokens generated per caption / answer (greedy).
        cider_tokenizer: "ptb" (official, Java) or "simple" (no Java; never mix the two).
        flow_threshold: keys above this share of text->image attention are shown on their own.
        pictures: examples whose last-token attention is drawn over the picture.
        homogeneity_presets: density-peak clustering presets of the homogeneity analysis.
        stages: which stages to run now (None: every stage the configured data allows).
    """

    STUDY: ClassVar[str] = "narrow-gate"

    model: str
    data: Mapping[str, str]
    splits: Mapping[str, str] = field(default_factory=dict)
    model_config: str | None = None
    n: int = 64
    seed: int = 0
    batch_size: int = 8
    device: str = "cpu"
    dtype: str | None = None
    layers: tuple[int, ...] | None = None
    knockout_modes: tuple[str, ...] = KNOCKOUT_MODES
    random_k: int = 10
    random_repeats: int = 3
    progressive_windows: tuple[int, ...] | None = None
    patch_pairs: int = 32
    steering_scales: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0)
    steering_layers: tuple[int, ...] | None = None
    overlap_k: int = 30
    overlap_class_balanced: bool = True
    caption_tokens: int = 60
    vqa_tokens: int = 20
    cider_tokenizer: str = "ptb"
    flow_threshold: float = 0.01
    pictures: int = 2
    homogeneity_presets: tuple[str, ...] = ("neurips", "v1")
    stages: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        data = {task: self.data for task in TASKS} if isinstance(self.data, str) else self.data
        _check_tasks(data, "data")
        _check_tasks(self.splits, "splits")
        if not data:
            raise ConfigError("data is empty: give one source, or {task: source} for " +
                              ", ".join(TASKS))
        object.__setattr__(self, "data", dict(data))
        object.__setattr__(self, "splits", dict(self.splits))
        for name in ("layers", "knockout_modes", "progressive_windows", "steering_scales",
                     "steering_layers", "homogeneity_presets"):
            value = getattr(self, name)
            if isinstance(value, (str, int, float)):
                raise ConfigError(f"{name} must be a list, got {value!r}")
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        if self.stages is not None:  # "gap,2" or [1, "knockout"]
            object.__setattr__(self, "stages", tuple(parse_stages(self.stages)))
        for name in ("n", "batch_size", "random_k", "patch_pairs", "overlap_k",
                     "caption_tokens", "vqa_tokens"):
            check_positive(name, getattr(self, name))
        for name in ("random_repeats", "pictures", "seed"):
            check_count(name, getattr(self, name))
        bad = [m for m in self.knockout_modes if m not in KNOCKOUT_MODES]
        if bad or not self.knockout_modes:
            raise ConfigError(f"knockout_modes {list(self.knockout_modes)}: choose from "
                              f"{list(KNOCKOUT_MODES)}")
        if self.cider_tokenizer not in CIDER_TOKENIZERS:
            raise ConfigError(f"cider_tokenizer must be one of {CIDER_TOKENIZERS}, got "
                              f"{self.cider_tokenizer!r}")
        if not 0 < self.flow_threshold < 1:
            raise ConfigError(f"flow_threshold must lie in (0, 1), got {self.flow_threshold}")
        if self.progressive_windows is not None:
            for w in self.progressive_windows:
                check_positive("progressive_windows entries", w)
        if not self.steering_scales:
            raise ConfigError("steering_scales is empty: give at least one scale, e.g. [0, 1, 2]")


def parse_stages(stages: str | Sequence[str | int]) -> list[str]:
    """Stage names from names or numbers 1-7 (``"gap,flow"``, ``[1, 2]``), in study order.

    Example:
        >>> parse_stages("4,gap")
        ['gap', 'knockout']
    """
    return select_stages(stages, STAGES)


def _check_tasks(mapping: Mapping[str, Any], what: str) -> None:
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{what} must be a mapping of task -> value, got {mapping!r}")
    bad = sorted(set(mapping) - set(TASKS))
    if bad:
        raise ConfigError(f"{what} has unknown task(s) {bad}; tasks: {list(TASKS)}")
