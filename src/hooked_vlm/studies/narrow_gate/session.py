"""What every stage shares: the loaded model, the data per task, chunks, prompts and the gate.

A :class:`NarrowGateSession` is built once per process from the config; building it loads and
checks the model, every configured task's data and the config's layer ranges (nothing is
written). Work units ask it for the inputs of chunk ``j`` of a task (``batch_size`` examples,
always the same ones for a given config), for seeds derived from (config seed, unit), and for
the token groups the knockouts use.

The gate is the token the Narrow Gate paper names: [EOI] where the model has one, else the last
image token (LLaVA-1.5 has no EOI); ``session.gate_note`` says which, for the results.

Example:
    >>> session = NarrowGateSession(NarrowGateConfig(model="tiny-native", data="synthetic",
    ...                                              n=16), "results/ng")
    >>> inputs, images = session.inputs("classify", session.chunks("classify")[0])
    >>> session.gate, inputs.layout.select(session.gate)[0]
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from hooked_vlm.settings import ConfigError
from hooked_vlm.studies.narrow_gate.config import NarrowGateConfig
from hooked_vlm.studies.session import Session, chunked, load_data, load_study_model


def unit_seed(*parts: object) -> int:
    """A stable 63-bit seed from any JSON-able parts (Python's ``hash`` is salted per process).

    Example:
        >>> unit_seed(0, "random", 3) == unit_seed(0, "random", 3)
        True
    """
    digest = hashlib.sha256(json.dumps(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class NarrowGateSession(Session):
    """The model and data of one run, loaded once per process."""

    def __init__(self, config: NarrowGateConfig, out_dir: str | Path, weights: bool = True) -> None:
        """``weights=False``: the model without weights (see :func:`load_study_model`), for a
        driver whose units run in other processes."""
        super().__init__(config, out_dir)
        self.model = load_study_model(
            config.model, device=config.device, dtype=config.dtype,
            model_config=config.model_config, weights=weights,
        )
        # batched generation needs the prompts' ends aligned: pad on the left
        self.model.tokenizer.padding_side = "left"
        tokens = self.model.architecture.tokens(self.model.hf_model.config)
        self.has_eoi = tokens.eoi is not None
        self.gate = "eoi" if self.has_eoi else "last_image"
        self.gate_note = (
            "the gate is the end-of-image token [EOI]" if self.has_eoi else
            f"{self.model.cfg.architecture} has no end-of-image token: the last image token "
            "stands in as the gate (its 'EOI' results are the last image token's)"
        )
        n_layers = self.model.cfg.n_layers
        self.layers = _layers(config.layers, n_layers, "layers")
        self.steering_layers = (
            [self.layers[len(self.layers) // 2]] if config.steering_layers is None
            else _layers(config.steering_layers, n_layers, "steering_layers")
        )
        self.windows = (
            list(range(1, n_layers + 1)) if config.progressive_windows is None
            else sorted(set(config.progressive_windows))
        )
        if self.windows[-1] > n_layers:
            raise ConfigError(f"progressive_windows {self.windows}: the model has only "
                              f"{n_layers} layers")
        missing = [layer for layer in self.steering_layers if layer not in self.layers]
        if missing:
            raise ConfigError(f"steering_layers {missing} are not among the analysed layers "
                              f"{self.layers}: the class means come from those layers")
        self.notes = [self.gate_note]
        self.shared: dict[str, Any] = {}  # what a stage computes once per process
        self._data: dict[str, Any] = {}
        for task in config.data:  # every configured source is checked before a run writes
            self.data(task)
        if self.has_task("classify"):
            self.labels  # noqa: B018 - refuses labels outside the model's class names

    def missing(self, *tasks: str) -> str | None:
        """Why a stage reading ``tasks`` cannot run (None: it can)."""
        absent = [t for t in tasks if not self.has_task(t)]
        if not absent:
            return None
        return f"needs data for {' and '.join(tasks)}; none configured for {', '.join(absent)}"

    def info(self) -> dict[str, Any]:
        """What the report's header says about the model and data."""
        return {**super().info(), "gate": self.gate, "gate_note": self.gate_note,
                "data": dict(self.config.data), "n": self.config.n}

    # ------------------------------------------------------------------ data
    def has_task(self, task: str) -> bool:
        return task in self.config.data

    def data(self, task: str) -> Any:
        """The ``n`` examples of ``task`` (a ``datasets.Dataset`` in the canonical schema)."""
        if task not in self._data:
            if not self.has_task(task):
                raise ConfigError(f"no data configured for task {task!r}")
            self._data[task] = load_data(self.config.data[task], f"data for {task}",
                                         split=self.config.splits.get(task), n=self.config.n,
                                         seed=self.config.seed, task=task)
        return self._data[task]

    def chunks(self, task: str) -> list[range]:
        """Rows of each work unit: ``batch_size`` consecutive examples (the last may be short)."""
        return chunked(len(self.data(task)), self.config.batch_size)

    def inputs(
        self, task: str, rows: Sequence[int], with_caption: bool = False
    ) -> tuple[Any, list[Any]]:
        """Model inputs (with ``.layout``) of ``rows`` under the task's prompt, and the images.

        ``with_caption``: the first reference caption follows the prompt (teacher-forced), so
        the text after the image is the image's own caption, as in the paper's Flickr30k runs.
        """
        examples = self.data(task).select(list(rows))
        images = list(examples["image"])
        template = self.model.model_config
        prompts = [template.prompt(task, question=q) for q in examples["question"]]
        if with_caption:
            prompts = [f"{p} {captions[0]}" for p, captions in
                       zip(prompts, examples["captions"], strict=True)]
        return self.model.prepare(images, prompts), images

    def column(self, task: str, name: str) -> list[Any]:
        return list(self.data(task)[name])

    # ------------------------------------------------------------------ token groups
    def image_keys(self, layout: Any) -> Tensor:
        """Every image-side key except the gate (BOI included): the paper's image->text cut."""
        gate = layout.mask(self.gate)
        return (layout.mask("boi") | layout.mask("image") | layout.mask("eoi")) & ~gate

    def all_image_keys(self, layout: Any) -> Tensor:
        """BOI, the image and the gate: cutting them all leaves text blind to the image."""
        return layout.mask("boi") | layout.mask("image_and_eoi")

    # ------------------------------------------------------------------ classes
    @cached_property
    def class_names(self) -> list[str] | None:
        """The model config's closed set of class names, if it gives one."""
        names = self.model.model_config.extra.get("class_names")
        return None if names is None else [str(n) for n in names]

    def class_token(self, name: str) -> int:
        """First sub-word id of a class name (the token a one-word answer starts with)."""
        ids = self.model.tokenizer(name, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ConfigError(f"class name {name!r} tokenizes to nothing")
        return int(ids[0])

    @cached_property
    def labels(self) -> list[str]:
        """Class labels of the classify data; refuses labels outside the model's class names."""
        labels = [str(y) for y in self.column("classify", "label")]
        if self.class_names is not None:
            unknown = sorted(set(labels) - set(self.class_names))
            if unknown:
                raise ConfigError(
                    f"labels {unknown[:5]} of the classify data are not among the model "
                    f"config's class_names {self.class_names[:10]}"
                )
        return labels

    @cached_property
    def label_tokens(self) -> np.ndarray:
        """First-token id of each classify example's label."""
        return np.array([self.class_token(y) for y in self.labels])

    def pair(self, index: int) -> tuple[int, int]:
        """``(target row, source row)`` of patching pair ``index``: classes whose first tokens
        differ (so the logit difference is defined), never an image with itself."""
        rng = np.random.default_rng(unit_seed(self.config.seed, "pair", index))
        tokens = self.label_tokens
        target = int(rng.integers(len(tokens)))
        others = np.flatnonzero(tokens != tokens[target])
        if others.size == 0:
            raise ConfigError("every classify example's label starts with the same token: "
                              "patching needs two classes")
        return target, int(rng.choice(others))

    def steering_target(self, row: int) -> str:
        """The class example ``row`` is steered toward: seeded, another class of the data."""
        own = self.label_tokens[row]
        classes = sorted({y for y, t in zip(self.labels, self.label_tokens, strict=True)
                          if t != own})
        if not classes:
            raise ConfigError("steering needs at least two classes in the classify data")
        rng = np.random.default_rng(unit_seed(self.config.seed, "steer-target", row))
        return classes[int(rng.integers(len(classes)))]


def _layers(layers: Sequence[int] | None, n_layers: int, what: str) -> list[int]:
    if layers is None:
        return list(range(n_layers))
    bad = [layer for layer in layers if not -n_layers <= layer < n_layers]
    if bad or not layers:
        raise ConfigError(f"{what} {list(layers)}: the model has {n_layers} layers "
                          f"(0..{n_layers - 1}, or negative from the end)")
    return sorted({layer % n_layers for layer in layers})
