"""Stages 6 and 7: does the gate carry the image's meaning? (analysis 6, and steering)

``patching``: pairs (target image of class B, source image of class A, A and B starting with
different tokens; never an image with itself). The source's activation at the gate is patched
into the target run (a) in the residual stream at the input of one layer at a time, (b) in the
attention input of layers l..L-1 together. Metrics at the last position: the logit difference
LD = logit[B] - logit[A] (first token of each class name), the flip rate (LD changes sign
against the clean target) and the similarity sum_v min(p, q) of the patched and the source's
next-token distributions.

``steering``: the gate's residual after block l of each classify example gets
``scale * (mean of the target class - mean of its own class)`` added (class means from the
``overlap`` stage's gate residuals, the example itself included); the target class is drawn per
example (seeded). Metric: LD = logit[target] - logit[own class]; the flip rate toward the
target is the fraction of examples with LD <= 0 unsteered that reach LD > 0.

Example:
    >>> PATCHING.reduce(session, session.units).resid["flip_rate"]   # per layer
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hooked_vlm.interventions import (
    PrefixCache,
    class_mean_difference,
    distribution_overlap,
    flip_rate,
    last_logits,
    logit_difference,
    patch_sweep,
    steer,
)
from hooked_vlm.settings import ConfigError
from hooked_vlm.storage import Store
from hooked_vlm.studies.narrow_gate.session import NarrowGateSession as Session
from hooked_vlm.studies.narrow_gate.stage_representations import overlap_keys
from hooked_vlm.studies.session import chunked, key_index, stacked
from hooked_vlm.studies.study import Result, Stage

SWEEPS = {"resid": ("blocks.{layer}.hook_resid_pre", False),
          "attn": ("blocks.{layer}.attn.hook_in", True)}

# ---------------------------------------------------------------------- stage 6: patching


def _pair_chunks(session: Session) -> list[range]:
    return chunked(session.config.patch_pairs, session.config.batch_size)


def _patching_keys(session: Session) -> list[str]:
    return [f"patching/{j:04d}" for j in range(len(_pair_chunks(session)))]


def _patching_unit(session: Session, key: str) -> dict[str, np.ndarray]:
    return patch_pairs(session, [session.pair(p) for p in _pair_chunks(session)[key_index(key)]])


@torch.no_grad()
def patch_pairs(session: Session, pairs: list[tuple[int, int]]) -> dict[str, np.ndarray]:
    """Patching metrics of ``(target row, source row)`` pairs of the classify data.

    With a pair's source equal to its target, patching changes nothing: LD as clean, no flip
    (the property the tests check; the study's own pairs never do this).
    """
    model = session.model
    targets, sources = [p[0] for p in pairs], [p[1] for p in pairs]
    target, _ = session.inputs("classify", targets)
    source, _ = session.inputs("classify", sources)
    _same_positions(session, target, source)
    t_tok = torch.as_tensor(session.label_tokens[targets])
    s_tok = torch.as_tensor(session.label_tokens[sources])
    last = torch.stack([p[-1] for p in target.layout.select("last")])
    clean_t = last_logits(model, target, [], last).float().cpu()
    clean_s = last_logits(model, source, [], last).float().cpu()

    def metric(logits: Tensor) -> Tensor:  # rows: (pair, layer) pairs, pair-major
        n = logits.shape[0] // len(pairs)
        logits = logits.float().cpu()
        ld = logit_difference(logits, t_tok.repeat_interleave(n), s_tok.repeat_interleave(n))
        similarity = distribution_overlap(logits, clean_s.repeat_interleave(n, 0))
        return torch.stack([ld, similarity], -1)

    out = {"target": np.array(targets), "source": np.array(sources),
           "ld_clean": logit_difference(clean_t, t_tok, s_tok).numpy(),
           "similarity_clean": distribution_overlap(clean_t, clean_s).numpy()}
    for name, (hook, cumulative) in SWEEPS.items():
        swept = patch_sweep(model, target, source, hook, session.gate, layers=session.layers,
                            cumulative=cumulative, metric=metric)  # [layer, pair, 2]
        out[f"ld_{name}"] = swept[..., 0].numpy()
        out[f"similarity_{name}"] = swept[..., 1].numpy()
    return out


def _same_positions(session: Session, target: dict, source: dict) -> None:
    same = target["input_ids"].shape == source["input_ids"].shape and all(
        torch.equal(a, b) for a, b in zip(target.layout.select(session.gate),
                                          source.layout.select(session.gate), strict=True))
    if not same:
        raise ConfigError("patching needs source and target at the same positions (same prompt, "
                          "same image size): these images give different token layouts")


@dataclass
class PatchingResult(Result):
    """Per sweep ("resid": the gate's residual at layer l; "attn": its attention input in
    layers l..L-1) and layer: flip rate, mean logit difference and similarity to the source."""

    STAGE = "patching"
    layers: list[int]
    pairs: int
    gate: str
    gate_note: str
    similarity_clean: float
    ld_clean: float
    resid: dict[str, list[float]]
    attn: dict[str, list[float]]

    def headline(self) -> list[tuple[str, str]]:
        flips = np.array(self.resid["flip_rate"])
        return [("EOI-residual patching: max flip rate (layer)" if self.gate == "eoi" else
                 "last-image residual patching: max flip rate (layer)",
                 f"{flips.max():.2f} (layer {self.layers[int(flips.argmax())]})"),
                ("attention-input patching l..L-1: flip rate from layer 0",
                 f"{self.attn['flip_rate'][0]:.2f}")]


def _patching_reduce(session: Session, store: Store) -> PatchingResult:
    units = _patching_keys(session)
    ld_clean = torch.from_numpy(stacked(store, units, "ld_clean"))
    sweeps: dict[str, Any] = {}
    for name in SWEEPS:
        ld = torch.from_numpy(stacked(store, units, f"ld_{name}", axis=1))  # [layer, pair]
        similarity = stacked(store, units, f"similarity_{name}", axis=1)
        sweeps[name] = {"flip_rate": [float(flip_rate(ld_clean, row)) for row in ld],
                        "ld": ld.mean(1).tolist(), "similarity": similarity.mean(1).tolist()}
    return PatchingResult(
        layers=session.layers, pairs=int(len(ld_clean)), gate=session.gate,
        gate_note=session.gate_note,
        similarity_clean=float(stacked(store, units, "similarity_clean").mean()),
        ld_clean=float(ld_clean.mean()), **sweeps)


PATCHING = Stage("patching", "6. Activation patching at the gate", _patching_keys,
                 _patching_unit, _patching_reduce, PatchingResult,
                 skip=lambda session: session.missing("classify"))

# ---------------------------------------------------------------------- stage 7: steering


def _steering_keys(session: Session) -> list[str]:
    return [f"steering/{j:04d}" for j in range(len(session.chunks("classify")))]


class _GateMeans:
    """Class-mean differences of the gate residuals (overlap stage), computed once per pair."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._gate: Tensor | None = None
        self._diffs: dict[tuple[str, str, int], Tensor] = {}

    def difference(self, target: str, own: str, layer: int) -> Tensor:
        if self._gate is None:
            units = overlap_keys(self.session)
            self._gate = torch.from_numpy(stacked(self.session.units, units, self.session.gate))
        key = (target, own, layer)
        if key not in self._diffs:
            index = self.session.layers.index(layer)
            self._diffs[key] = class_mean_difference(self._gate[:, index], self.session.labels,
                                                     target, own)
        return self._diffs[key]


def _steering_unit(session: Session, key: str) -> dict[str, np.ndarray]:
    means = session.shared.setdefault("gate_means", _GateMeans(session))
    rows = session.chunks("classify")[key_index(key)]
    model = session.model
    inputs, _ = session.inputs("classify", rows)
    layout = inputs.layout
    own = [session.labels[r] for r in rows]
    target = [session.steering_target(r) for r in rows]
    own_tok = torch.as_tensor(session.label_tokens[list(rows)])
    target_tok = torch.as_tensor([session.class_token(t) for t in target])
    last = torch.stack([p[-1] for p in layout.select("last")])
    start = int(min(p.min() for p in layout.select(session.gate)))
    prefix = PrefixCache.build(model, inputs, start)
    ld = np.zeros((len(session.steering_layers), len(session.config.steering_scales), len(rows)))
    for i, layer in enumerate(session.steering_layers):
        vectors = torch.stack([means.difference(t, o, layer)
                               for t, o in zip(target, own, strict=True)])
        for s, scale in enumerate(session.config.steering_scales):
            hooks = steer(model, layout, vectors, positions=session.gate, layers=[layer],
                          scale=float(scale), point="hook_resid_post")
            logits = last_logits(model, inputs, hooks, last, prefix=prefix).float().cpu()
            ld[i, s] = logit_difference(logits, target_tok, own_tok).numpy()
    clean = last_logits(model, inputs, [], last, prefix=prefix).float().cpu()
    return {"ld": ld, "ld_clean": logit_difference(clean, target_tok, own_tok).numpy()}


@dataclass
class SteeringResult(Result):
    """Per steering layer and scale: flip rate toward the target class, how often it wins,
    the flip rate and the mean logit difference."""

    STAGE = "steering"
    layers: list[int]
    scales: list[float]
    flip_toward_target: list[list[float | None]]
    target_wins: list[list[float]]
    flip_rate: list[list[float]]
    ld: list[list[float]]
    n: int
    n_below: int
    gate: str
    gate_note: str

    def headline(self) -> list[tuple[str, str]]:
        best = max(((v, layer, s) for layer, row in zip(self.layers, self.flip_toward_target,
                                                       strict=True)
                    for v, s in zip(row, self.scales, strict=True) if v is not None),
                   default=None)
        return [("steering: max flip rate toward target",
                 "n/a" if best is None else f"{best[0]:.2f} (layer {best[1]}, scale {best[2]})")]


def _steering_reduce(session: Session, store: Store) -> SteeringResult:
    units = _steering_keys(session)
    ld = stacked(store, units, "ld", axis=2)  # [layer, scale, example]
    clean = stacked(store, units, "ld_clean")
    below = clean <= 0
    toward = [[float((row[below] > 0).mean()) if below.any() else None for row in per_layer]
              for per_layer in ld]
    return SteeringResult(
        layers=session.steering_layers, scales=list(session.config.steering_scales),
        flip_toward_target=toward, target_wins=(ld > 0).mean(2).tolist(),
        flip_rate=[[float(flip_rate(torch.from_numpy(clean), torch.from_numpy(row)))
                    for row in per_layer] for per_layer in ld],
        ld=ld.mean(2).tolist(), n=int(len(clean)), n_below=int(below.sum()), gate=session.gate,
        gate_note=session.gate_note)


STEERING = Stage("steering", "7. Steering with class-mean gate differences", _steering_keys,
                 _steering_unit, _steering_reduce, SteeringResult, needs=("overlap",),
                 skip=lambda session: session.missing("classify"))
