"""Token groups of a multimodal sequence: BOS, BOI, image tokens (rows, EOL, EOF), EOI, text.

A :class:`TokenLayout` is computed once from ``input_ids`` (and the attention mask, for padded
batches) and then used by caching, knockout, patching, steering and every analysis, so no code
elsewhere hard-codes a position.

Groups (``layout.select(name)`` gives positions per example, ``layout.mask(name)`` a bool
``[batch, pos]`` tensor):

======================  ==============================================================
``bos``                 the beginning-of-sequence token, when the sequence starts with one
``boi``                 begin-of-image token (Chameleon ``<racm3:break>``, Emu3 ``<|image start|>``)
``image_meta``          tokens between BOI and the first image token (Emu3's size header)
``image``               every position holding image content: features / VQ codes, row breaks,
                        end-of-line and end-of-frame tokens
``image_patches``       ``image`` without the row / EOL / EOF tokens
``eol``                 row-ending tokens (Emu3 ``<|extra_200|>``, Pixtral ``[IMG_BREAK]``)
``eof``                 end-of-frame token (Emu3 ``<|extra_201|>``)
``eoi``                 end-of-image token (Chameleon ``<eoss>``, Emu3 ``<|image end|>``)
``image_and_eoi``       every image-dependent position up to and including EOI
``first_image``         the first ``image`` position of each image
``last_image``          the last ``image`` position of each image (the nearest EOI analogue for
                        models without one, such as LLaVA-1.5)
``text``                every real position that is none of the above (BOS excluded)
``last``                the last real (non-padding) position
======================  ==============================================================

Example:
    >>> layout = model.layout(inputs["input_ids"], attention_mask=inputs["attention_mask"])
    >>> layout.select("eoi")          # [tensor([40]), tensor([40])]
    >>> layout.mask("text").shape     # torch.Size([2, 48])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from hooked_vlm.architectures import SpecialTokens

GROUPS = (
    "bos", "boi", "image_meta", "image", "image_patches", "eol", "eof", "eoi",
    "image_and_eoi", "first_image", "last_image", "text", "last",
)
IMAGE_GROUPS = frozenset(GROUPS) - {"bos", "text", "last"}
_BOI_SEARCH = 32  # how far before an image its BOI may sit (Emu3 puts a size header between)


class LayoutError(ValueError):
    """A token group was asked for that the sequence or the architecture does not have."""


@dataclass(frozen=True)
class ImageSpan:
    """One image inside one sequence; positions are absolute indices into the sequence."""

    start: int  # first image position
    end: int  # last image position (inclusive)
    boi: int | None = None
    eoi: int | None = None
    eof: int | None = None
    meta: tuple[int, ...] = ()
    eol: tuple[int, ...] = ()


@dataclass
class TokenLayout:
    """Per-example positions of each token group (see the module docstring for the groups)."""

    masks: dict[str, Bool[Tensor, "batch pos"]]
    spans: list[list[ImageSpan]]
    tokens: SpecialTokens
    architecture: str = ""
    notes: str = ""
    _cache: dict[str, list[Tensor]] = field(default_factory=dict, repr=False)

    @property
    def batch_size(self) -> int:
        return self.masks["text"].shape[0]

    @property
    def seq_len(self) -> int:
        return self.masks["text"].shape[1]

    def mask(self, name: str) -> Bool[Tensor, "batch pos"]:
        """Bool mask ``[batch, pos]`` of group ``name`` (may be empty for some examples)."""
        self._check_name(name)
        return self.masks[name]

    def select(self, name: str, allow_empty: bool = False) -> list[Int[Tensor, " n"]]:
        """Positions of group ``name``, one 1-D tensor per example.

        Raises :class:`LayoutError` when an example has none, unless ``allow_empty``: an empty
        selection is almost always a mistake (asking for EOI on a text-only example, say).
        """
        self._check_name(name)
        if name not in self._cache:
            self._cache[name] = [row.nonzero().flatten() for row in self.masks[name]]
        positions = self._cache[name]
        if not allow_empty:
            empty = [i for i, p in enumerate(positions) if p.numel() == 0]
            if empty:
                raise LayoutError(self._empty_message(name, empty))
        return positions

    def n_images(self) -> list[int]:
        """Number of images in each example."""
        return [len(s) for s in self.spans]

    def to(self, device: torch.device | str) -> TokenLayout:
        """The same layout with its masks on ``device``."""
        masks = {k: v.to(device) for k, v in self.masks.items()}
        return TokenLayout(masks, self.spans, self.tokens, self.architecture, self.notes)

    def _check_name(self, name: str) -> None:
        if name in self.masks:
            return
        raise LayoutError(
            f"unknown token group {name!r}. Token groups: {', '.join(GROUPS)} "
            "(see hooked_vlm.layout.token_layout)."
        )

    def _empty_message(self, name: str, empty: Sequence[int]) -> str:
        which = f"example(s) {list(empty)}"
        missing = {"boi": self.tokens.boi, "eoi": self.tokens.eoi, "eof": self.tokens.eof}
        if name in missing and missing[name] is None:
            return (
                f"{self.architecture or 'this model'} has no {name.upper()} token, so group "
                f"{name!r} is empty for {which}. {self.notes} Use 'last_image' (the last image "
                "position) as the nearest analogue, or 'image_and_eoi' for the whole image."
            )
        if name in IMAGE_GROUPS:
            no_image = [i for i in empty if not self.spans[i]]
            if no_image:
                return (
                    f"group {name!r} is empty: example(s) {no_image} contain no image (no "
                    f"image placeholder id {self.tokens.image} in input_ids). Pass images with "
                    "every prompt, or select per example with allow_empty=True."
                )
        return f"token group {name!r} is empty for {which}."


def build_layout(
    input_ids: Int[Tensor, "batch pos"],
    tokens: SpecialTokens,
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    grids: Sequence[tuple[int, int]] | None = None,
    tokens_per_image: int | None = None,
    architecture: str = "",
    notes: str = "",
) -> TokenLayout:
    """Compute the :class:`TokenLayout` of a (possibly padded) batch.

    Args:
        input_ids: token ids ``[batch, pos]``, left- or right-padded.
        tokens: the architecture's special token ids.
        attention_mask: 1 for real tokens, 0 for padding; ``None`` means no padding.
        grids: ``(rows, cols)`` per image in batch order, for layouts whose end-of-line token
            is one of the image placeholders (Emu3): the last placeholder of every row.
        tokens_per_image: placeholders per image, to split adjacent images of equal size.
    """
    if input_ids.ndim != 2:
        raise LayoutError(f"input_ids must be [batch, pos], got shape {tuple(input_ids.shape)}")
    ids = input_ids.detach().cpu()
    real = (
        torch.ones_like(ids, dtype=torch.bool)
        if attention_mask is None
        else attention_mask.detach().cpu().bool()
    )
    content_ids = [t for t in (tokens.image, tokens.row_break, tokens.eof) if t is not None]
    is_content = torch.isin(ids, torch.tensor(content_ids)) & real
    grid_iter = iter(grids) if grids is not None else None
    spans = [
        _spans_of(ids[b], real[b], is_content[b], tokens, grid_iter, tokens_per_image)
        for b in range(ids.shape[0])
    ]
    if grid_iter is not None and next(grid_iter, None) is not None:
        raise LayoutError(
            "more image grids/sizes were given than images found in input_ids: check that "
            "image_sizes matches the images in the prompts."
        )
    masks = _masks_from_spans(ids, real, spans, tokens)
    return TokenLayout(masks, spans, tokens, architecture, notes)


def _runs(flags: Tensor) -> list[tuple[int, int]]:
    """Inclusive (start, end) of each run of True in a 1-D bool tensor."""
    padded = torch.cat([torch.tensor([False]), flags, torch.tensor([False])]).int()
    edges = padded.diff()
    starts = (edges == 1).nonzero().flatten().tolist()
    ends = ((edges == -1).nonzero().flatten() - 1).tolist()
    return list(zip(starts, ends, strict=True))


def _spans_of(
    ids: Tensor,
    real: Tensor,
    is_content: Tensor,
    tokens: SpecialTokens,
    grids: object,
    tokens_per_image: int | None,
) -> list[ImageSpan]:
    spans: list[ImageSpan] = []
    previous_end = -1
    for start, end in _split_runs(_runs(is_content), tokens, tokens_per_image):
        boi = _find_boi(ids, real, start, previous_end, tokens.boi)
        eoi = end + 1 if _is(ids, real, end + 1, tokens.eoi) else None
        eof = end if _is(ids, real, end, tokens.eof) else None
        eol = [p for p in range(start, end + 1) if _is(ids, real, p, tokens.row_break)]
        if grids is not None:
            eol += _grid_eols(ids, start, end, tokens.image, next(grids, None))
        meta = tuple(range(boi + 1, start)) if boi is not None else ()
        spans.append(ImageSpan(start, end, boi, eoi, eof, meta, tuple(sorted(eol))))
        previous_end = eoi if eoi is not None else end
    return spans


def _split_runs(
    runs: list[tuple[int, int]], tokens: SpecialTokens, per_image: int | None
) -> list[tuple[int, int]]:
    """Split runs holding several adjacent same-size images (no BOI/EOI between them)."""
    if per_image is None or tokens.boi is not None or tokens.eoi is not None:
        return runs
    out = []
    for start, end in runs:
        length = end - start + 1
        if length > per_image and length % per_image == 0:
            out += [(s, s + per_image - 1) for s in range(start, end + 1, per_image)]
        else:
            out.append((start, end))
    return out


def _is(ids: Tensor, real: Tensor, pos: int, token: int | None) -> bool:
    return token is not None and 0 <= pos < len(ids) and bool(real[pos]) and ids[pos] == token


def _find_boi(ids: Tensor, real: Tensor, start: int, floor: int, boi: int | None) -> int | None:
    if boi is None:
        return None
    for pos in range(start - 1, max(floor, start - 1 - _BOI_SEARCH), -1):
        if _is(ids, real, pos, boi):
            return pos
    return None


def _grid_eols(
    ids: Tensor, start: int, end: int, image: int, grid: tuple[int, int] | None
) -> list[int]:
    """EOL positions inside a placeholder run whose rows are ``cols`` codes + 1 EOL."""
    if grid is None:
        raise LayoutError(
            "fewer image grids/sizes were given than images found in input_ids: pass one "
            "image size per image."
        )
    rows, cols = grid
    placeholders = [p for p in range(start, end + 1) if ids[p] == image]
    if len(placeholders) != rows * (cols + 1):
        raise LayoutError(
            f"an image of {rows}x{cols} codes needs {rows * (cols + 1)} placeholders "
            f"({rows} rows of {cols} codes + 1 end-of-line), found {len(placeholders)} at "
            f"positions {start}..{end}. Check image_sizes against the prompt."
        )
    return [placeholders[(r + 1) * (cols + 1) - 1] for r in range(rows)]


def _masks_from_spans(
    ids: Tensor, real: Tensor, spans: list[list[ImageSpan]], tokens: SpecialTokens
) -> dict[str, Tensor]:
    shape = ids.shape
    m = {name: torch.zeros(shape, dtype=torch.bool) for name in GROUPS}
    for b, example in enumerate(spans):
        for s in example:
            m["image"][b, s.start : s.end + 1] = True
            m["first_image"][b, s.start] = True
            m["last_image"][b, s.end] = True
            m["eol"][b, list(s.eol)] = True
            m["image_meta"][b, list(s.meta)] = True
            for name, pos in (("boi", s.boi), ("eoi", s.eoi), ("eof", s.eof)):
                if pos is not None:
                    m[name][b, pos] = True
        real_pos = real[b].nonzero().flatten()
        if real_pos.numel():
            first, last = int(real_pos[0]), int(real_pos[-1])
            m["last"][b, last] = True
            if tokens.bos is not None and ids[b, first] == tokens.bos:
                m["bos"][b, first] = True
    m["image_patches"] = m["image"] & ~m["eol"] & ~m["eof"]
    m["image_and_eoi"] = m["image"] | m["eoi"]
    not_text = m["bos"] | m["boi"] | m["image_meta"] | m["image"] | m["eoi"]
    m["text"] = real & ~not_text
    return m
