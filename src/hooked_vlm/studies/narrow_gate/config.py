"""The Narrow Gate study's configuration: one frozen, typed dataclass, loadable from YAML.

Every field that changes a number is part of the run's identity (written to the results
directory's ``config.json``): resuming with a different identity is an error, never mixed
results. Only ``stages`` (which parts to run now) is left out, so stages can be added to an
existing run later. Each field is a command-line option of ``hooked-vlm run narrow-gate``.

Example YAML (any field may be left out; command-line options override the file):

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

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from hooked_vlm.settings import ConfigError, check_count, check_device, check_positive
from hooked_vlm.studies.study import StudyConfig

TASKS = ("caption", "vqa", "classify")
STAGES = ("gap", "flow", "overlap", "knockout", "progressive", "patching", "steering")


@dataclass(frozen=True)
class NarrowGateConfig(StudyConfig):
    """Everything a Narrow Gate run depends on (REFERENCE.md, Paper 1, analyses 1-7).

    Attributes:
        model: model-config name, local save_pretrained directory or HF hub id.
        data: one source for every task (hub id, local folder/file, or "synthetic"), or, in a
            YAML file, {task: source} for tasks caption, vqa, classify (a task left out is
            skipped).
        splits: {task: split} where the source's default split is not wanted.
        model_config: model-config name or YAML path for a local model (prompt templates,
            special tokens, class names); hub ids and config names find theirs.
        n: examples per task (the first n of a permutation seeded by seed).
        seed: seeds the examples, random positions, random knockout keys, pairs and targets.
        batch_size: examples per forward, and per work unit (so it is part of the identity).
        device: where the model runs: cpu, cuda, cuda:1, mps.
        dtype: precision: float32, bf16, fp16 (default: the model's).
        layers: layers of the per-layer analyses and sweeps (default: all).
        knockout_modes: zero (post-softmax, the paper's code) and/or mask (-inf).
        random_k, random_repeats: the random-image-token control: k tokens, repeats averaged.
        progressive_windows: knock out only the last w layers, for each w (default: 1..L).
        patch_pairs: (source, target) image pairs of different classes for EOI patching.
        steering_scales: steering strengths.
        steering_layers: layers steered (default: the middle analysed layer).
        overlap_k: neighbours of the label overlap (capped per run, the cap is recorded).
        overlap_class_balanced: weigh classes equally in the overlap (DADApy's default).
        caption_tokens, vqa_tokens: new tokens generated per caption / answer (greedy).
        cider_tokenizer: ptb (official, Java) or simple (no Java; never mix the two).
        flow_threshold: keys above this share of text->image attention are shown on their own.
        pictures: examples whose last-token attention is drawn over the picture.
        homogeneity_presets: density-peak clustering presets of the homogeneity analysis.
        stages: stages to run now, names or numbers 1-7 (default: every stage the data
            allows): gap, flow, overlap, knockout, progressive, patching, steering.
    """

    STUDY: ClassVar[str] = "narrow-gate"
    STAGES: ClassVar[tuple[str, ...]] = STAGES

    model: str
    data: str | Mapping[str, str]
    splits: Mapping[str, str] = field(default_factory=dict)
    model_config: str | None = None
    n: int = 64
    seed: int = 0
    batch_size: int = 8
    device: str = "cpu"
    dtype: str | None = None
    layers: tuple[int, ...] | None = None
    knockout_modes: tuple[Literal["zero", "mask"], ...] = ("zero", "mask")
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
    cider_tokenizer: Literal["ptb", "simple"] = "ptb"
    flow_threshold: float = 0.01
    pictures: int = 2
    homogeneity_presets: tuple[Literal["neurips", "v1"], ...] = ("neurips", "v1")
    stages: str | tuple[str | int, ...] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        data = {task: self.data for task in TASKS} if isinstance(self.data, str) else self.data
        for what, mapping in (("data", data), ("splits", self.splits)):
            bad = sorted(set(mapping) - set(TASKS))
            if bad:
                raise ConfigError(f"{what} has unknown task(s) {bad}; tasks: {list(TASKS)}")
        if not data:
            raise ConfigError("data is empty: give one source, or {task: source} for " +
                              ", ".join(TASKS))
        object.__setattr__(self, "data", dict(data))
        for name in ("n", "batch_size", "random_k", "patch_pairs", "overlap_k",
                     "caption_tokens", "vqa_tokens"):
            check_positive(name, getattr(self, name))
        for name in ("random_repeats", "pictures", "seed"):
            check_count(name, getattr(self, name))
        check_device(self.device)
        if not self.knockout_modes or len(set(self.knockout_modes)) < len(self.knockout_modes):
            raise ConfigError(f"knockout_modes {list(self.knockout_modes)}: give zero and/or "
                              "mask, each once")
        if not 0 < self.flow_threshold < 1:
            raise ConfigError(f"flow_threshold must lie in (0, 1), got {self.flow_threshold}")
        for w in self.progressive_windows or ():
            check_positive("progressive_windows entries", w)
        if not self.steering_scales:
            raise ConfigError("steering_scales is empty: give at least one scale, e.g. [0, 1, 2]")
        if not self.homogeneity_presets:
            raise ConfigError("homogeneity_presets is empty: choose from neurips, v1")
