"""Stage 2: where text reads the image from (analysis 3), reduced inside the pattern hooks.

Input: each caption image, the caption prompt and its first reference caption. Each layer's
``hook_pattern`` hook sums the attention of the text after the image onto each
image-side key (``text_to_image_mass``) and keeps ``[batch, n_keys]``: no ``L x H x S^2``
pattern is ever cached. The reduction sums over the dataset and splits the shares into the
paper's categories: EOI, last image token, other keys above the threshold, internal image.

For the first ``pictures`` examples the same hook also keeps the last text position's attention
over the image patches (summed over heads), to draw it on the picture.

Example:
    >>> reduced = FLOW.reduce(session, store)
    >>> reduced.values["eoi"]          # share of text->image attention on EOI, per layer
"""

from __future__ import annotations

from functools import partial
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
from hooked_vlm.studies.common import picture_fit, thumbnail
from hooked_vlm.studies.narrow_gate.session import Session
from hooked_vlm.studies.stages import Reduced, Stage
from hooked_vlm.studies.units import Unit, UnitStore


def _units(session: Session, store: UnitStore) -> list[Unit]:
    return [Unit(f"flow/{j:04d}", partial(_unit, session, rows))
            for j, rows in enumerate(session.chunks("caption"))]


def _unit(session: Session, rows: range) -> dict[str, np.ndarray]:
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


def _reduce(session: Session, store: UnitStore) -> Reduced:
    loaded = [store.load(u.key) for u in _units(session, store)]
    first = loaded[0]
    for other in loaded[1:]:
        if not (np.array_equal(other["eoi_keys"], first["eoi_keys"])
                and np.array_equal(other["last_keys"], first["last_keys"])):
            raise ValueError("examples differ in their image-side key layout: the flow shares "
                             "need one image size (one key count) per run")
    total = torch.from_numpy(np.concatenate([u["mass"] for u in loaded]).sum(0))  # [L, keys]
    flow = flow_contributions(total, torch.from_numpy(first["eoi_keys"]),
                              torch.from_numpy(first["last_keys"]), session.config.flow_threshold)
    salient = flow.salient.sum(1)
    values = {
        "layers": session.layers, "n": int(sum(len(r) for r in session.chunks("caption"))),
        "threshold": flow.threshold, "has_eoi": session.has_eoi, "gate_note": session.gate_note,
        "n_keys": int(total.shape[1]), "key_labels": first["key_labels"].tolist(),
        "eoi": flow.eoi.tolist(), "last_image": flow.last_image.tolist(),
        "salient": salient.tolist(), "n_salient": (flow.salient > 0).sum(1).tolist(),
        "internal_image": flow.internal_image.tolist(),
        "picture_fit": picture_fit(session.model), "picture_rows": [],
    }
    arrays = {"shares": flow.shares.numpy()}
    with_pictures = [u for u in loaded if u["picture_rows"].size]
    if with_pictures:
        arrays["heat"] = np.concatenate([u["heat"] for u in with_pictures])
        arrays["picture"] = np.concatenate([u["picture"] for u in with_pictures])
        values["picture_rows"] = np.concatenate(
            [u["picture_rows"] for u in with_pictures]).tolist()
    gate = np.array(values["eoi"] if session.has_eoi else values["last_image"])
    layer = session.layers[int(gate.argmax())]
    name = "EOI" if session.has_eoi else "last image (no EOI)"
    headline = [(f"max {name} share of text->image attention", f"{gate.max():.2f} (layer {layer})"),
                ("mean internal-image share", f"{np.mean(values['internal_image']):.2f}")]
    return Reduced(values, headline, arrays)


FLOW = Stage("flow", "2. Cross-modal attention flow", _units, _reduce)
