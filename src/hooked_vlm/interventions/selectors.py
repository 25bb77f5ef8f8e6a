"""Position selectors: which positions of each example an intervention touches.

A selector is one of

- a :class:`~hooked_vlm.layout.TokenLayout` group name: ``"text"``, ``"eoi"``, ``"image"``,
  ``"image_and_eoi"``, ``"last"``, ... (see :mod:`hooked_vlm.layout.token_layout`);
- ``"all"`` (every position) or ``"text_after_image"`` (text after the example's last image);
- ``"random_<group>:k"``, e.g. ``"random_image:10"``: ``k`` positions of the group drawn per
  example with a seeded generator (the Narrow Gate control);
- ``"<group>@frame=k"``, e.g. ``"image@frame=2"``: the group within video frame ``k`` of each
  example (see ``TokenLayout.select(..., frame=k)``);
- explicit positions: a list of ints (the same for every example), a list of lists (one per
  example), a 1-D int tensor, or a bool tensor ``[batch, pos]``.

Positions past the prompt (tokens being generated) are text: ``"text"``, ``"all"`` and
``"text_after_image"`` include them, every other selector does not.

Example:
    >>> sel = resolve(layout, "random_image:10", seed=0)
    >>> sel.mask.shape, sel.first()   # (torch.Size([2, 75]), 5)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from hooked_vlm.interventions._common import InterventionError
from hooked_vlm.layout import GROUPS, LayoutError, TokenLayout

Selector = str | Sequence[int] | Sequence[Sequence[int]] | Tensor
_EXTENDS = frozenset({"text", "all", "text_after_image"})
_RANDOM = re.compile(r"^random_(\w+):(\d+)$")
_FRAME = re.compile(r"^(\w+)@frame=(\d+)$")


class SelectorError(InterventionError):
    """A selector that is malformed, out of range or empty for some example."""


@dataclass
class Positions:
    """A resolved selector: a bool mask over prompt positions, per example.

    ``blocks`` are the layout's bidirectional attention blocks (``-1``: causal; see
    :class:`~hooked_vlm.layout.TokenLayout`): a query in a block also sees the later keys of
    its block, and a change at any block position reaches the whole block.
    """

    mask: Bool[Tensor, "batch pos"]
    generated: bool = False  # whether positions past the prompt are selected
    blocks: Int[Tensor, "batch pos"] | None = None
    _on: dict[torch.device, Tensor] = field(default_factory=dict, repr=False)

    def window(self, start: int, stop: int, device: torch.device) -> Bool[Tensor, "batch n"]:
        """Selection of absolute positions ``start .. stop-1`` (past the prompt: ``generated``)."""
        if device not in self._on:
            self._on[device] = self.mask.to(device)
        return _window(self._on[device], start, stop, self.generated)

    def block_window(self, start: int, stop: int, device: torch.device) -> Tensor | None:
        """Block ids of absolute positions ``start .. stop-1`` (-1 past the prompt), or None."""
        if self.blocks is None:
            return None
        return _window(self.blocks.to(device), start, stop, -1)

    def first(self) -> int:
        """The smallest position a change at the selected positions reaches, over the batch:
        the first selected position, or the start of the attention block holding it (the
        prompt length if none is selected)."""
        return self._reached_from(self.mask)

    def first_reaching(self, keys: Positions) -> int:
        """The first position an edit of ``queries -> keys`` edges can change: the first query
        with a selected key it attends to (at or before it, or anywhere in its attention
        block), lowered to the start of that query's block."""
        seq = self.mask.shape[1]
        first_key = torch.where(keys.mask.any(1), keys.mask.float().argmax(1), seq)
        pos = torch.arange(seq)
        edges = self.mask & (pos[None, :] >= first_key[:, None])
        if self.blocks is not None:
            for b in range(self.mask.shape[0]):
                key_blocks = self.blocks[b][keys.mask[b] & (self.blocks[b] >= 0)].unique()
                edges[b] |= self.mask[b] & torch.isin(self.blocks[b], key_blocks)
        return self._reached_from(edges)

    def repeat_interleave(self, n: int) -> Positions:
        blocks = None if self.blocks is None else self.blocks.repeat_interleave(n, dim=0)
        return Positions(self.mask.repeat_interleave(n, dim=0), self.generated, blocks)

    def _reached_from(self, changed: Bool[Tensor, "batch pos"]) -> int:
        seq = changed.shape[1]
        if self.blocks is not None:  # a block member's change reaches the block's first position
            changed = changed.clone()
            for b in range(changed.shape[0]):
                for block in self.blocks[b][changed[b] & (self.blocks[b] >= 0)].unique():
                    changed[b, int((self.blocks[b] == block).nonzero()[0])] = True
        hit = changed.any(0).nonzero()
        return int(hit[0]) if hit.numel() else seq


def _window(values: Tensor, start: int, stop: int, fill: bool | int) -> Tensor:
    """``values[:, start:stop]``, columns past ``values`` filled with ``fill``."""
    inside = values[:, start:stop]
    extra = stop - max(start, values.shape[1])
    if extra <= 0:
        return inside
    tail = torch.full((values.shape[0], extra), fill, dtype=values.dtype, device=values.device)
    return torch.cat([inside, tail], dim=1)


def resolve(layout: TokenLayout, selector: Selector | Positions, *, seed: int = 0) -> Positions:
    """Resolve ``selector`` against ``layout``; raise :class:`SelectorError` if it is empty for
    some example or names positions outside the sequence.

    Example:
        >>> resolve(layout, [[40], [41]]).mask.nonzero()
    """
    if isinstance(selector, Positions):
        return selector
    batch, seq = layout.batch_size, layout.seq_len
    generated = isinstance(selector, str) and selector in _EXTENDS
    if isinstance(selector, str):
        mask = _named(layout, selector, seed)
    elif isinstance(selector, Tensor) and selector.dtype == torch.bool:
        if tuple(selector.shape) != (batch, seq):
            raise SelectorError(
                f"a bool selector must have shape [batch, pos] = {(batch, seq)}, "
                f"got {tuple(selector.shape)}."
            )
        mask = selector.detach().cpu()
    else:
        mask = _explicit(selector, batch, seq)
    empty = [b for b in range(batch) if not mask[b].any()]
    if empty and isinstance(selector, str) and selector in GROUPS:
        try:
            layout.select(selector)
        except LayoutError as err:
            raise SelectorError(str(err)) from None
    if empty:
        raise SelectorError(
            f"selector {_show(selector)} selects no position in example(s) {empty}; every "
            "example needs at least one (check its image tokens, or pass explicit positions)."
        )
    return Positions(mask, generated, layout.attention_blocks)


def _named(layout: TokenLayout, name: str, seed: int) -> Tensor:
    if name == "all":
        return torch.ones(layout.batch_size, layout.seq_len, dtype=torch.bool)
    if name == "text_after_image":
        image = layout.mask("image_and_eoi")
        seq = layout.seq_len
        last = torch.where(image.any(1), seq - 1 - image.flip(1).float().argmax(1), seq)
        return layout.mask("text") & (torch.arange(seq)[None, :] > last[:, None])
    random = _RANDOM.match(name)
    if random:
        return _random(layout, random.group(1), int(random.group(2)), seed)
    frame = _FRAME.match(name)
    if frame:
        group, k = frame.group(1), int(frame.group(2))
        try:
            layout.select(group, frame=k)  # a clear error when a frame lacks the group
        except LayoutError as err:
            raise SelectorError(str(err)) from None
        return layout.mask(group, frame=k).cpu()
    try:
        return layout.mask(name).cpu()
    except LayoutError as err:
        raise SelectorError(
            f"{err} Also accepted: 'all', 'text_after_image', 'random_<group>:k' (e.g. "
            "'random_image:10'), '<group>@frame=k' (e.g. 'image@frame=2'), explicit positions "
            "or a bool [batch, pos] mask."
        ) from None


def _random(layout: TokenLayout, group: str, k: int, seed: int) -> Tensor:
    if group not in GROUPS:
        raise SelectorError(
            f"'random_{group}:{k}': unknown group {group!r}; groups: {', '.join(GROUPS)}."
        )
    gen = torch.Generator().manual_seed(seed)
    pool = layout.mask(group).cpu()
    out = torch.zeros_like(pool)
    for b in range(pool.shape[0]):
        candidates = pool[b].nonzero().flatten()
        if candidates.numel() < k:
            raise SelectorError(
                f"'random_{group}:{k}' asks for {k} positions but example {b} has only "
                f"{candidates.numel()} in group {group!r}."
            )
        out[b, candidates[torch.randperm(candidates.numel(), generator=gen)[:k]]] = True
    return out


def _explicit(selector: Selector, batch: int, seq: int) -> Tensor:
    if isinstance(selector, Tensor):
        if selector.ndim != 1 or selector.is_floating_point():
            raise SelectorError(
                "a tensor selector must be a 1-D integer tensor of positions or a bool "
                f"[batch, pos] mask; got {selector.dtype} of shape {tuple(selector.shape)}."
            )
        selector = selector.tolist()
    items = list(selector)
    per_example = bool(items) and all(isinstance(x, (list, tuple, Tensor)) for x in items)
    if per_example and len(items) != batch:
        raise SelectorError(
            f"per-example positions need one list per example ({batch}), got {len(items)}."
        )
    rows = [list(map(int, x)) for x in items] if per_example else [list(map(int, items))] * batch
    mask = torch.zeros(batch, seq, dtype=torch.bool)
    for b, row in enumerate(rows):
        bad = [p for p in row if not 0 <= p < seq]
        if bad:
            raise SelectorError(
                f"positions {bad} of example {b} are outside the sequence (0..{seq - 1})."
            )
        mask[b, row] = True
    return mask


def _show(selector: object) -> str:
    text = repr(selector)
    return text if len(text) < 60 else text[:57] + "..."


def repeat_layout(layout: TokenLayout, n: int) -> TokenLayout:
    """``layout`` with each example repeated ``n`` times in a row (``repeat_interleave``).

    Example:
        >>> big = repeat_layout(layout, 8)   # 8 copies of each example, e.g. for 8 head masks
    """
    masks = {k: v.repeat_interleave(n, dim=0) for k, v in layout.masks.items()}
    spans = [s for s in layout.spans for _ in range(n)]
    blocks = layout.attention_blocks
    if blocks is not None:
        blocks = blocks.repeat_interleave(n, dim=0)
    return layout.replace(masks=masks, spans=spans, attention_blocks=blocks)


def check_batch(positions: Positions, batch: int, what: str) -> None:
    if positions.mask.shape[0] != batch:
        raise InterventionError(
            f"{what}: the layout has {positions.mask.shape[0]} examples but the forward runs "
            f"{batch}; build the layout from the same inputs (repeat_layout for repeated ones)."
        )
