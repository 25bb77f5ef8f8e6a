"""Stages 1 and 3: how text and image representations relate, layer by layer.

- ``gap`` (analysis 1-2), caption data, each image followed by the caption prompt and its first
  reference caption: per example one random text position after the image and one random image
  position (seeded per unit); their residuals after every block; cosine median/IQR per layer
  (signed and absolute) and the modality homogeneity of density-peak clusters per preset.
- ``overlap`` (analysis 4), classify data: the residuals of the gate (EOI), the last image token
  and the mean over image tokens; neighbourhood overlap with the class labels per layer.

Example:
    >>> GAP.reduce(session, session.units).cosine["median"]     # one value per analysed layer
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from hooked_vlm.analysis import (
    ModalitySample,
    chance_overlap,
    flow_masks,
    label_overlap,
    mean_token_vector,
    modality_gap,
    modality_homogeneity,
    random_positions,
    token_vectors,
)
from hooked_vlm.storage import Store
from hooked_vlm.studies.narrow_gate.collect import residuals_at
from hooked_vlm.studies.narrow_gate.session import NarrowGateSession as Session
from hooked_vlm.studies.narrow_gate.session import unit_seed
from hooked_vlm.studies.session import key_index, stacked
from hooked_vlm.studies.study import Result, Stage

# ---------------------------------------------------------------------- stage 1: modality gap


def _gap_keys(session: Session) -> list[str]:
    return [f"gap/{j:04d}" for j in range(len(session.chunks("caption")))]


def _gap_unit(session: Session, key: str) -> dict[str, np.ndarray]:
    j = key_index(key)
    rows = session.chunks("caption")[j]
    inputs, _ = session.inputs("caption", rows, with_caption=True)
    layout = inputs.layout
    generator = torch.Generator().manual_seed(unit_seed(session.config.seed, "gap", j))
    text_after_image, _ = flow_masks(layout)  # text before the image is the same everywhere
    text_pos = random_positions(text_after_image, generator)
    image_pos = random_positions(layout.mask("image"), generator)
    batch = torch.arange(len(rows))
    picks = {
        "text": lambda resid: resid[batch, text_pos.to(resid.device)],
        "image": lambda resid: resid[batch, image_pos.to(resid.device)],
    }
    vectors = residuals_at(session.model, inputs, picks, session.layers)
    return {**vectors, "text_pos": text_pos.numpy(), "image_pos": image_pos.numpy()}


@dataclass
class GapResult(Result):
    """Cosine of text and image residuals per layer (median, IQR; signed and absolute) and the
    modality homogeneity of density-peak clusters per preset (None: not computed, see
    ``homogeneity_errors``), with the cluster counts."""

    STAGE = "gap"
    layers: list[int]
    n: int
    cosine: dict[str, list[float]]
    abs_cosine: dict[str, list[float]]
    homogeneity: dict[str, list[float | None]]
    homogeneity_errors: dict[str, list[str]]
    clusters: dict[str, list[int | None]]

    def headline(self) -> list[tuple[str, str]]:
        median = np.array(self.cosine["median"])
        rows = [("max median cosine (layer)",
                 f"{median.max():.3f} (layer {self.layers[int(median.argmax())]})")]
        for preset, scores in self.homogeneity.items():
            ok = [s for s in scores if s is not None]
            counts = [c for c in self.clusters[preset] if c is not None]
            rows.append((f"homogeneity {preset} (min..max; clusters)",
                         f"{min(ok):.2f}..{max(ok):.2f}; {min(counts)}..{max(counts)}"
                         if ok else "n/a (too few points)"))
        return rows


def _gap_reduce(session: Session, store: Store) -> GapResult:
    units = _gap_keys(session)
    text, image = (torch.from_numpy(stacked(store, units, k)).transpose(0, 1)
                   for k in ("text", "image"))  # [layer, n, d]
    sample = ModalitySample(text, image, torch.from_numpy(stacked(store, units, "text_pos")),
                            torch.from_numpy(stacked(store, units, "image_pos")))
    values: dict[str, Any] = {"layers": session.layers, "n": int(text.shape[1])}
    for key, absolute in (("cosine", False), ("abs_cosine", True)):
        gap = modality_gap(sample, absolute=absolute)
        values[key] = {"median": gap.median.tolist(), "q25": gap.q25.tolist(),
                       "q75": gap.q75.tolist()}
    values["homogeneity"], values["homogeneity_errors"], values["clusters"] = {}, {}, {}
    for preset in session.config.homogeneity_presets:
        scores, errors, clusters = [], [], []
        for layer in range(len(session.layers)):
            try:
                result = modality_homogeneity(text[layer], image[layer], preset)
            except ValueError as err:  # too few points for the preset, degenerate vectors
                scores.append(None)
                clusters.append(None)
                errors.append(f"layer {session.layers[layer]}: {err}")
                continue
            scores.append(result.score)
            # one cluster makes the score 0 whatever the modalities: say how many there were
            clusters.append(len(np.unique(result.clustering.clusters.labels)))
        values["homogeneity"][preset] = scores
        values["homogeneity_errors"][preset] = errors
        values["clusters"][preset] = clusters
    return GapResult(**values)


GAP = Stage("gap", "1. Modality gap and homogeneity", _gap_keys, _gap_unit, _gap_reduce,
            GapResult, skip=lambda session: session.missing("caption"))

# ---------------------------------------------------------------------- stage 3: overlap


def overlap_tokens(session: Session) -> list[str]:
    """Token groups whose residuals the overlap stage keeps (the gate first)."""
    return ["eoi", "last_image", "image_mean"] if session.has_eoi else ["last_image", "image_mean"]


def overlap_keys(session: Session) -> list[str]:
    return [f"overlap/{j:04d}" for j in range(len(session.chunks("classify")))]


def _overlap_unit(session: Session, key: str) -> dict[str, np.ndarray]:
    inputs, _ = session.inputs("classify", session.chunks("classify")[key_index(key)])
    layout = inputs.layout
    picks = {
        name: (partial(mean_token_vector, selector=layout.mask("image")) if name == "image_mean"
               else partial(token_vectors, selector=layout.mask(name)))
        for name in overlap_tokens(session)
    }
    return residuals_at(session.model, inputs, picks, session.layers)


def overlap_k(session: Session, labels: list[str]) -> tuple[int, str]:
    """The k used: the configured k, capped so every class can fill its neighbourhood."""
    smallest = min(np.unique(labels, return_counts=True)[1])
    k = max(1, min(session.config.overlap_k, int(smallest) - 1, len(labels) - 1))
    rule = ("as configured" if k == session.config.overlap_k else
            f"capped from {session.config.overlap_k}: the smallest class has {smallest} "
            "examples, so at most smallest - 1 neighbours can share a label")
    return k, rule


@dataclass
class OverlapResult(Result):
    """Neighbourhood overlap chi with the class labels per layer, per token group."""

    STAGE = "overlap"
    layers: list[int]
    n: int
    k: int
    k_requested: int
    k_rule: str
    class_balanced: bool
    chi: dict[str, list[float]]
    chance: float
    n_classes: int
    gate: str

    def headline(self) -> list[tuple[str, str]]:
        rows = [(f"overlap chi, last layer: {name}", f"{c[-1]:.2f}") for name, c in
                self.chi.items()]
        return [*rows, ("overlap k (chance level)", f"{self.k} ({self.chance:.2f})")]


def _overlap_reduce(session: Session, store: Store) -> OverlapResult:
    units = overlap_keys(session)
    labels = session.labels
    k, rule = overlap_k(session, labels)
    balanced = session.config.overlap_class_balanced
    chi = {}
    for name in overlap_tokens(session):
        vectors = stacked(store, units, name)  # [n, layer, d]
        chi[name] = [label_overlap(vectors[:, i], labels, k, balanced)
                     for i in range(vectors.shape[1])]
    return OverlapResult(
        layers=session.layers, n=len(labels), k=k, k_requested=session.config.overlap_k,
        k_rule=rule, class_balanced=balanced, chi=chi,
        chance=chance_overlap(labels, balanced), n_classes=len(set(labels)), gate=session.gate)


OVERLAP = Stage("overlap", "3. Neighbourhood overlap with labels", overlap_keys, _overlap_unit,
                _overlap_reduce, OverlapResult, skip=lambda session: session.missing("classify"))
