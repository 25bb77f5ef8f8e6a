"""Units of work -> targets in a store: every unit a pure function of (config, examples, key).

A unit is (split, example, mask chunk), keyed ``"split/example/chunk"``
(:func:`~hooked_vlm.attribution.store.unit_key`). :class:`Evaluator` holds a loaded model, the
examples and the config, and evaluates any masks on any example: masks run ``batch_size`` per
forward as a repeated batch on the example's clean prefix (its image keys/values computed once
per example and reused). :func:`run_unit` evaluates one unit and writes it; a loop
(:func:`run`) or a Slurm array task (``Shard.parse("0/4").of(units(evaluator))``) drives it
here, and the head-attribution study's ``masks`` stage runs the same units on any engine
(:func:`hooked_vlm.studies.run_study`: resume, shards, Ray). Units are ordered by example, so a
shard reuses each example's prefix across its chunks.

Example:
    >>> config = AttributionConfig(n_masks=2000, alpha=0.5, mode="baseline_kv", baseline="mean")
    >>> evaluator = Evaluator(model, examples, config)
    >>> store = open_store("runs/coco", evaluator)       # or reopen: resumes
    >>> run(evaluator, store, Shard.parse("0/4").of(units(evaluator)))   # task 0 of 4
"""

from __future__ import annotations

import hashlib
import time
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import Tensor

from hooked_vlm.attribution.config import AttributionConfig
from hooked_vlm.attribution.store import MaskStore, chunk_count, parse_key, unit_key
from hooked_vlm.attribution.targets import Example, Target, get_target
from hooked_vlm.interventions.ablation import (
    ABLATION_MODES,
    KVBaseline,
    ablation_prefix,
    evaluate_head_masks,
    kv_baseline,
    mean_head_outputs,
)
from hooked_vlm.interventions.prefix import PrefixCache
from hooked_vlm.interventions.selectors import Selector, resolve
from hooked_vlm.layout import TokenLayout
from hooked_vlm.settings import ConfigError

# the config lists the modes by name (it imports no torch); they must be the intervention's
assert set(typing.get_args(typing.get_type_hints(AttributionConfig)["mode"])) == set(
    ABLATION_MODES)

if TYPE_CHECKING:
    from hooked_vlm.model import HookedVLM


class MaskEvaluator(Protocol):
    """What :func:`run_unit` needs: the run's config and sizes, and targets of masks."""

    config: AttributionConfig
    n_layers: int
    n_heads: int
    n_examples: int

    def evaluate(self, example: int, masks: np.ndarray) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]:
        """JSON-able; holds at least ``config`` (as ``to_json``), ``n_layers``, ``n_heads``,
        ``n_examples``."""
        ...

    def prepare(self, store: MaskStore) -> None: ...


@dataclass
class _ExampleState:
    index: int
    layout: TokenLayout
    ablation: dict[str, Any]
    prefix: PrefixCache | None


class Evaluator:
    """A model, its examples and a config: targets of head masks on any example.

    ``target``: a custom :class:`Target` whose name is ``config.target`` (built-in names need
    nothing). ``examples_id``: a name for the examples recorded in the store (e.g. dataset,
    split and indices); by default a digest of every example's tensors and token ids (which
    reads every example once). ``fingerprint``: the model's (:mod:`hooked_vlm.fingerprint`;
    by default computed from its weights), recorded in the store so that another checkpoint
    never reuses it. Statistics the ablation needs (the dataset-mean baseline, mean head
    outputs) are computed on first use, or shared through a store (:meth:`prepare`).
    """

    def __init__(
        self,
        model: HookedVLM,
        examples: Sequence[Example],
        config: AttributionConfig,
        target: Target | None = None,
        examples_id: str | None = None,
        fingerprint: Mapping[str, str | None] | None = None,
    ) -> None:
        if target is not None and target.name != config.target:
            raise ConfigError(
                f"config.target is {config.target!r} but the target given is named "
                f"{target.name!r}; set AttributionConfig(target={target.name!r})."
            )
        if not examples:
            raise ConfigError("no examples given.")
        vocab = model.cfg.d_vocab
        for i, ex in enumerate(examples):
            outside = [t for t in (ex.answer, ex.foil) if t is not None and t >= vocab]
            if outside:
                raise ConfigError(f"example {i}: token id {outside[0]} is outside the model's "
                                  f"vocabulary of {vocab}")
        self.model = model
        self.examples = examples
        self.config = config
        self.target = target if target is not None else get_target(config.target)
        self.n_layers, self.n_heads = model.cfg.n_layers, model.cfg.n_heads
        self.n_examples = len(examples)
        self.examples_id = examples_id
        self.fingerprint = dict(fingerprint) if fingerprint is not None else None
        self._stats: dict[str, Tensor] | None = None
        self._share: MaskStore | None = None
        self._state: _ExampleState | None = None

    # ------------------------------------------------------------------ description
    def describe(self) -> dict[str, Any]:
        """The JSON description a store is keyed by: config, sizes, model (with its
        fingerprint), examples."""
        from hooked_vlm.fingerprint import model_fingerprint

        cfg = self.model.cfg
        if self.fingerprint is None:
            self.fingerprint = model_fingerprint(self.model)
        return {
            "config": self.config.to_json(),
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_examples": self.n_examples,
            "examples": self.examples_id or examples_digest(self.examples),
            "model": {"architecture": cfg.architecture, "n_kv_heads": cfg.n_kv_heads,
                      "d_head": cfg.d_head, "dtype": str(self.model.dtype),
                      "fingerprint": self.fingerprint},
        }

    def prepare(self, store: MaskStore) -> None:
        """Share the ablation statistics through ``store``: read on first use (computed and
        saved there by whoever needs them first)."""
        self._share, self._stats, self._state = store, None, None

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(
        self,
        example: int,
        masks: np.ndarray | Tensor,
        *,
        queries: Selector | None = None,
        keys: Selector | None = None,
    ) -> np.ndarray:
        """Targets of example ``example`` under keep-masks ``[n, n_layers, n_heads]`` -> ``[n]``.

        ``queries`` / ``keys`` override the config's selectors (a bool ``[n, pos]`` gives each
        mask its own positions, see :func:`~hooked_vlm.interventions.evaluate_head_masks`).
        """
        state = self._example(example)
        ex = self.examples[example]
        ablation = dict(state.ablation)
        ablation.update({k: v for k, v in (("queries", queries), ("keys", keys)) if v is not None})
        masks = torch.as_tensor(np.asarray(masks), dtype=self.model.dtype)
        values = evaluate_head_masks(
            self.model, ex.inputs, masks, lambda logits: self.target(logits, ex),
            self.config.mode, batch_size=self.config.batch_size,
            reuse_prefix=self.config.reuse_prefix, prefix=state.prefix, **ablation,
        )
        return values.float().cpu().numpy()

    def layout(self, example: int) -> TokenLayout:
        """The token layout of example ``example``."""
        return self._example(example).layout

    def ablation(self, example: int) -> dict[str, Any]:
        """The :func:`~hooked_vlm.interventions.head_ablation` arguments of example ``example``:
        the selectors and what the mode needs (baseline keys/values, mean head output), without
        the reused prefix: for estimates that run no masks (:mod:`hooked_vlm.attribution.atp`).

        Example:
            >>> evaluator.ablation(0)["baseline"].keys[3].shape   # [1, pos, kv_head, d_head]
        """
        inputs = self._inputs_of(example)
        return self._ablation(inputs, self.model.layout(**inputs))

    def _inputs_of(self, example: int) -> Mapping[str, Any]:
        if not 0 <= example < self.n_examples:
            raise IndexError(f"example {example} does not exist ({self.n_examples} examples).")
        return self.examples[example].inputs

    def _ablation(self, inputs: Mapping[str, Any], layout: TokenLayout) -> dict[str, Any]:
        return {"queries": self.config.queries, "keys": self.config.keys,
                **self._ablation_inputs(inputs, layout)}

    def _example(self, index: int) -> _ExampleState:
        if self._state is not None and self._state.index == index:
            return self._state
        inputs = self._inputs_of(index)
        self._state = None  # free the previous example's prefix first
        layout = self.model.layout(**inputs)  # once: the ablation and the state share it
        ablation = self._ablation(inputs, layout)
        probe = torch.ones(1, self.n_layers, self.n_heads)
        prefix = (
            ablation_prefix(self.model, inputs, probe, self.config.mode, **ablation)
            if self.config.reuse_prefix else None
        )
        self._state = _ExampleState(index, layout, ablation, prefix)
        return self._state

    # ------------------------------------------------------------------ ablation inputs
    def _ablation_inputs(self, inputs: Mapping[str, Any], layout: TokenLayout) -> dict[str, Any]:
        mode, kind = self.config.mode, self.config.baseline
        if mode == "mean":
            return {"mean": self._statistics()["z_mean"].to(self.model.device)}
        if mode != "baseline_kv":
            return {}
        if kind == "mean":
            stats = self._statistics()
            return {"baseline": KVBaseline(
                [stats[f"keys.{i}"].to(self.model.device) for i in range(self.n_layers)],
                [stats[f"values.{i}"].to(self.model.device) for i in range(self.n_layers)],
            )}
        if kind == "blank":
            return {"baseline": kv_baseline(self.model, blank_image(inputs))}
        cfg = self.model.cfg
        zeros = torch.zeros(1, layout.seq_len, cfg.n_kv_heads, cfg.d_head,
                            dtype=self.model.dtype, device=self.model.device)
        return {"baseline": KVBaseline([zeros] * cfg.n_layers, [zeros] * cfg.n_layers)}

    def _statistics(self) -> dict[str, Tensor]:
        if self._stats is None:
            self._stats = (self._share.tensors("stats", self._compute_stats)
                           if self._share is not None else self._compute_stats())
        return self._stats

    def _compute_stats(self) -> dict[str, Tensor]:
        if self.config.mode == "mean":
            return {"z_mean": mean_z(self.model, self.examples, self.config.queries)}
        return mean_kv(self.model, self.examples, self.config.keys)


def examples_digest(examples: Sequence[Example]) -> str:
    """A digest of every example's input tensors, answer, foil and label."""
    digest = hashlib.blake2b(digest_size=16)
    for ex in examples:
        for key in sorted(ex.inputs):
            value = ex.inputs[key]
            digest.update(key.encode())
            if isinstance(value, Tensor):
                digest.update(str((value.dtype, tuple(value.shape))).encode())
                digest.update(value.detach().cpu().contiguous().view(torch.uint8).numpy())
            else:
                digest.update(repr(value).encode())
        digest.update(repr((ex.answer, ex.foil, ex.label)).encode())
    return "blake2b:" + digest.hexdigest()


def blank_image(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """``inputs`` with ``pixel_values`` set to zeros (the normalised mean pixel: a gray image).

    Example:
        >>> kv_baseline(model, blank_image(inputs))
    """
    if "pixel_values" not in inputs:
        raise ConfigError(
            "baseline 'blank' replaces pixel_values, but these inputs have none; use "
            "baseline 'mean' or 'zeros'."
        )
    return {**inputs, "pixel_values": torch.zeros_like(inputs["pixel_values"])}


@torch.no_grad()
def mean_kv(
    model: HookedVLM, examples: Sequence[Example], keys: str = "image"
) -> dict[str, Tensor]:
    """Dataset-mean keys/values per layer and position, up to the last ``keys`` position:
    ``{"keys.{l}": [1, pos, kv_head, d_head], "values.{l}": ...}``.

    Every example must hold its ``keys`` positions at the same places (a per-position mean of
    rotated keys means nothing otherwise).
    """
    masks = [resolve(model.layout(**ex.inputs), keys).mask[0] for ex in examples]
    end = max(int(m.nonzero().max()) + 1 for m in masks)
    if any(m.shape[0] < end or not torch.equal(m[:end], masks[0][:end]) for m in masks):
        raise ConfigError(
            f"baseline 'mean' averages keys/values per position, so every example needs its "
            f"{keys!r} positions at the same places; these examples differ (pad prompts to one "
            "template, or use baseline 'blank' or 'zeros')."
        )
    sums: dict[str, Tensor] = {}
    for ex in examples:
        base = kv_baseline(model, ex.inputs)
        for i in range(model.cfg.n_layers):
            for name, t in ((f"keys.{i}", base.keys[i]), (f"values.{i}", base.values[i])):
                part = t[:, :end].float()
                sums[name] = sums[name] + part if name in sums else part
    return {k: (v / len(examples)).to(model.dtype) for k, v in sums.items()}


@torch.no_grad()
def mean_z(model: HookedVLM, examples: Sequence[Example], positions: str) -> Tensor:
    """Mean head output ``hook_z`` ``[n_layers, n_heads, d_head]`` over ``positions`` of every
    example (each example weighted equally)."""
    total = None
    for ex in examples:
        z = mean_head_outputs(model, ex.inputs, model.layout(**ex.inputs), positions).float()
        total = z if total is None else total + z
    return (total / len(examples)).to(model.dtype)


# ---------------------------------------------------------------------- units and engines
def units(evaluator: MaskEvaluator) -> list[str]:
    """Every unit's key, ordered by example, split, chunk.

    Example:
        >>> len(units(evaluator))   # n_examples * sum(ceil(split size / chunk_size))
    """
    splits = evaluator.config.splits(evaluator.n_layers, evaluator.n_heads)
    return [
        unit_key(name, example, chunk)
        for example in range(evaluator.n_examples)
        for name, masks in splits.items()
        for chunk in range(chunk_count(masks.size, evaluator.config.chunk_size))
    ]


def open_store(path: str | Path, evaluator: MaskEvaluator) -> MaskStore:
    """Create or reopen the run's store (an error if it holds another run), and let the
    evaluator load the statistics it shares there.

    Example:
        >>> store = open_store("runs/coco", evaluator)
    """
    splits = evaluator.config.splits(evaluator.n_layers, evaluator.n_heads)
    store = MaskStore.open(
        path, evaluator.describe(),
        {name: (evaluator.n_examples, masks.size) for name, masks in splits.items()},
        evaluator.config.chunk_size,
    )
    evaluator.prepare(store)
    return store


def evaluate_unit(evaluator: MaskEvaluator, key: str, store: MaskStore) -> dict[str, np.ndarray]:
    """The targets of unit ``key`` (``{"values": [chunk]}``), computed (not written).

    Example:
        >>> evaluate_unit(evaluator, "train/0/3", store)["values"].shape   # (chunk_size,)
    """
    split, example, chunk = parse_key(key)
    start, stop = store.chunk_range(split, chunk)
    masks = evaluator.config.splits(evaluator.n_layers, evaluator.n_heads)[split]
    return {"values": evaluator.evaluate(example, masks.masks(start, stop))}


def run_unit(evaluator: MaskEvaluator, key: str, store: MaskStore) -> bool:
    """Evaluate unit ``key`` and write it, unless it is done already. True if it ran.

    Example:
        >>> run_unit(evaluator, "train/0/3", store)
    """
    if store.done(key):
        return False
    start = time.perf_counter()
    values = evaluate_unit(evaluator, key, store)
    store.save(key, values, time.perf_counter() - start)
    return True


def run(
    evaluator: MaskEvaluator,
    store: MaskStore,
    work: Iterable[str] | None = None,
    on_unit: Callable[[str, bool], None] | None = None,
) -> int:
    """Run ``work`` (default: every unit not done yet); returns how many units ran.
    ``on_unit(unit, ran)`` is called after each unit (a progress bar, say).

    Example:
        >>> run(evaluator, store)        # resumes a killed run
    """
    ran = 0
    for unit in store.missing() if work is None else work:
        fresh = run_unit(evaluator, unit, store)
        ran += fresh
        if on_unit is not None:
            on_unit(unit, fresh)
    return ran
