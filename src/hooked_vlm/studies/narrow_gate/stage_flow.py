"""Stage 2: where text reads the image from (analysis 3), reduced inside the pattern hooks.

Input: each caption image, the caption prompt and its first reference caption. Each layer's
``hook_pattern`` hook sums the attention of the text after the image onto each
image-side key (``text_to_image_mass``) and keeps ``[batch, n_keys]``: no ``L x H x S^2``
pattern is ever cached. The reduction sums over the dataset and splits the shares into the
paper's categories: EOI, last image token, other keys above the threshold, internal image.

For the first ``pictures`` examples the same hook also keeps the last text position's attention
over the image patches (summed over heads), to draw it on the picture.

Example:
    >>> FLOW.reduce(session, session.units).eoi   # share of text->image attention on EOI
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hooked_vlm.analysis import (
    flow_contributions,
    flow_masks,
    image_key_values,
    key_categories,
    scatter_to_grid,
    text_to_image_mass,
)
from hooked_vlm.layout import patch_grid
from hooked_vlm.pictures import picture_fit, thumbnail
from hooked_vlm.storage import Store
from hooked_vlm.studies.narrow_gate.session import NarrowGateSession as Session
from hooked_vlm.studies.session import key_index
from hooked_vlm.studies.study import Result, Stage


def _keys(session: Session) -> list[str]:
    return [f"flow/{j:04d}" for j in range(len(session.chunks("caption")))]


def _unit(session: Session, key: str) -> dict[str, np.ndarray]:
    rows = session.chunks("caption")[key_index(key)]
    inputs, images = session.inputs("caption", rows, with_caption=True)
    layout = inputs.layout
    queries, keys = flow_masks(layout)
    eoi_keys, last_keys = key_categories(layout)
    drawn = [b for b, row in enumerate(rows) if row < session.config.pictures]
    grids = [patch_grid(layout, b, **inputs) for b in drawn]
    last = [int(layout.select("last")[b][-1]) for b in drawn]
    masses: dict[int, torch.Tensor] = {}
    heats: dict[int, torch.Tensor] = {}

    def hook(pattern: torch.Tensor, hook: Any) -> None:
        layer = hook.layer()
        mass = text_to_image_mass(pattern, queries.to(pattern.device), keys.to(pattern.device))
        masses[layer] = image_key_values(mass, keys).float().cpu()
        if drawn:
            heats[layer] = torch.stack([
                scatter_to_grid(pattern[b, :, q].sum(0, dtype=torch.float32), grid).cpu()
                for b, q, grid in zip(drawn, last, grids, strict=True)
            ])

    hooks = [(f"blocks.{layer}.attn.hook_pattern", hook) for layer in session.layers]
    session.model.run_with_hooks(inputs, fwd_hooks=hooks)
    out = {
        "mass": torch.stack([masses[layer] for layer in session.layers], 1).numpy(),
        "eoi_keys": eoi_keys.numpy(), "last_keys": last_keys.numpy(),
        "key_labels": np.array(_key_labels(layout, keys)),
        "picture_rows": np.array([rows[b] for b in drawn], dtype=np.int64),
    }
    if drawn:
        out["heat"] = torch.stack([heats[layer] for layer in session.layers], 1).numpy()
        out["picture"] = np.stack([thumbnail(images[b]) for b in drawn])
    return out


def _key_labels(layout: Any, keys: torch.Tensor) -> list[str]:
    """A short name for each image-side key of example 0: EOI, EOF, EOL, or image token i."""
    names, count = [], 0
    for position in keys[0].nonzero().flatten().tolist():
        group = next((g for g in ("eoi", "eof", "eol", "boi") if layout.mask(g)[0, position]),
                     None)
        names.append(group.upper() if group else f"img {count}")
        count += group is None
    return names


@dataclass
class FlowResult(Result):
    """Shares of text->image attention per layer: on EOI, the last image token, other keys
    above the threshold and the rest (``shares``: per layer and key); the last text
    position's attention over the first ``pictures`` examples' patches (``heat``)."""

    STAGE = "flow"
    layers: list[int]
    n: int
    threshold: float
    has_eoi: bool
    gate_note: str
    n_keys: int
    key_labels: list[str]
    eoi: list[float]
    last_image: list[float]
    salient: list[float]
    n_salient: list[int]
    internal_image: list[float]
    picture_fit: str
    picture_rows: list[int]
    shares: np.ndarray
    heat: np.ndarray | None = None
    picture: np.ndarray | None = None

    def headline(self) -> list[tuple[str, str]]:
        gate = np.array(self.eoi if self.has_eoi else self.last_image)
        layer = self.layers[int(gate.argmax())]
        name = "EOI" if self.has_eoi else "last image (no EOI)"
        return [(f"max {name} share of text->image attention", f"{gate.max():.2f} (layer "
                 f"{layer})"),
                ("mean internal-image share", f"{np.mean(self.internal_image):.2f}")]


def _reduce(session: Session, store: Store) -> FlowResult:
    loaded = [store.load(key) for key in _keys(session)]
    first = loaded[0]
    for other in loaded[1:]:
        if not (np.array_equal(other["eoi_keys"], first["eoi_keys"])
                and np.array_equal(other["last_keys"], first["last_keys"])):
            raise ValueError("examples differ in their image-side key layout: the flow shares "
                             "need one image size (one key count) per run")
    total = torch.from_numpy(np.concatenate([u["mass"] for u in loaded]).sum(0))  # [L, keys]
    flow = flow_contributions(total, torch.from_numpy(first["eoi_keys"]),
                              torch.from_numpy(first["last_keys"]), session.config.flow_threshold)
    with_pictures = [u for u in loaded if u["picture_rows"].size]
    pictures: dict[str, Any] = {"picture_rows": []}
    if with_pictures:
        pictures = {
            "heat": np.concatenate([u["heat"] for u in with_pictures]),
            "picture": np.concatenate([u["picture"] for u in with_pictures]),
            "picture_rows": np.concatenate([u["picture_rows"] for u in with_pictures]).tolist()}
    return FlowResult(
        layers=session.layers, n=int(sum(len(r) for r in session.chunks("caption"))),
        threshold=flow.threshold, has_eoi=session.has_eoi, gate_note=session.gate_note,
        n_keys=int(total.shape[1]), key_labels=first["key_labels"].tolist(),
        eoi=flow.eoi.tolist(), last_image=flow.last_image.tolist(),
        salient=flow.salient.sum(1).tolist(), n_salient=(flow.salient > 0).sum(1).tolist(),
        internal_image=flow.internal_image.tolist(), picture_fit=picture_fit(session.model),
        shares=flow.shares.numpy(), **pictures)


FLOW = Stage("flow", "2. Cross-modal attention flow", _keys, _unit, _reduce, FlowResult,
             skip=lambda session: session.missing("caption"))
