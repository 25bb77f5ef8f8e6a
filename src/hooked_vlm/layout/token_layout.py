"""Token groups of a multimodal sequence: BOS, BOI, image tokens (rows, EOL, EOF), EOI, text.

A :class:`TokenLayout` is computed once from ``input_ids`` (and the attention mask, for padded
batches) and then used by caching, knockout, patching, steering and every analysis, so no code
elsewhere hard-codes a position.

Groups (``layout.select(name)`` gives positions per example, ``layout.mask(name)`` a bool
``[batch, pos]`` tensor):

======================  ==============================================================
``bos``                 the beginning-of-sequence token, when the sequence (or its text, after
                        a leading image as in PaliGemma) starts with one
``boi``                 begin-of-image token (Chameleon ``<racm3:break>``,
                        Emu3 ``<|image start|>``, Janus ``<begin_of_image>``,
                        Qwen2-VL ``<|vision_start|>``, InternVL ``<img>``)
``image_meta``          structural tokens of an image that carry no image content: Emu3's size
                        header between BOI and the codes (outside ``image``), and Idefics3's
                        ``<fake_token_around_image>`` / ``<row_r_col_c>`` / ``<global-img>`` tile
                        tags (inside the ``image`` span)
``image``               every position of the image span: features / VQ codes, row breaks,
                        end-of-line and end-of-frame tokens, in-span tile tags
``image_patches``       ``image`` without the row / EOL / EOF tokens and tile tags
``eol``                 row-ending tokens (Emu3 ``<|extra_200|>``, Pixtral ``[IMG_BREAK]``, the
                        ``image_newline`` features of LLaVA-NeXT / OneVision, Idefics3's
                        ``\\n`` between tile rows)
``eof``                 end-of-frame token (Emu3 ``<|extra_201|>``)
``eoi``                 end-of-image token (Chameleon ``<eoss>``, Emu3 ``<|image end|>``, Pixtral
                        ``[IMG_END]``, Janus ``<end_of_image>``, Qwen2-VL ``<|vision_end|>``,
                        InternVL ``</img>``)
``image_and_eoi``       every image-dependent position up to and including EOI
``first_image``         the first ``image`` position of each image
``last_image``          the last ``image`` position of each image (the nearest EOI analogue for
                        models without one, such as LLaVA-1.5)
``text``                every real position that is none of the above (BOS excluded)
``last``                the last real (non-padding) position
======================  ==============================================================

How spans are found, from ids alone (plus per-image grids where the ids cannot tell):
a span is a run of content ids (image placeholder, EOF, in-span tags) holding at least one
placeholder; runs separated only by row-break ids (Pixtral ``[IMG_BREAK]``, Idefics3 ``\\n``)
are one span; adjacent same-size images without BOI/EOI are split by ``tokens_per_image`` or
by the per-image :class:`ImageGrid` sizes. Rows whose end-of-line is itself a placeholder
(Emu3, LLaVA-NeXT's ``image_newline``) come from :class:`ImageGrid`.

Example:
    >>> layout = model.layout(inputs["input_ids"], attention_mask=inputs["attention_mask"])
    >>> layout.select("eoi")          # [tensor([40]), tensor([40])]
    >>> layout.mask("text").shape     # torch.Size([2, 48])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from hooked_vlm.layout.tokens import SpecialTokens

if TYPE_CHECKING:
    from hooked_vlm.layout.patch_grid import PatchRule

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
    """One image (or video frame) inside one sequence; positions are absolute indices.

    ``frame`` is the frame's index in its video and ``video`` the video's index among the
    batch's videos, for frames; both are ``None`` for still images.
    """

    start: int  # first image position
    end: int  # last image position (inclusive)
    boi: int | None = None
    eoi: int | None = None
    eof: int | None = None
    meta: tuple[int, ...] = ()
    eol: tuple[int, ...] = ()
    frame: int | None = None
    video: int | None = None

    @property
    def positions(self) -> range:
        """Every position the image owns: BOI (and any header) through EOI."""
        first = self.boi if self.boi is not None else self.start
        last = self.eoi if self.eoi is not None else self.end
        return range(min(first, *self.meta) if self.meta else first, last + 1)


@dataclass(frozen=True)
class VideoGrid:
    """The placeholders of one video: ``frames`` frames of ``per_frame`` tokens each.

    Example:
        >>> VideoGrid(frames=2, per_frame=4)   # Qwen2-VL: video_grid_thw (4, 4, 4), 2x2 merge
    """

    frames: int
    per_frame: int


@dataclass(frozen=True)
class ImageGrid:
    """Placeholders of one image whose row ends are placeholders too (the ids cannot tell).

    ``n_tokens`` placeholders; ``eol`` the offsets (among this image's placeholders) of those
    that end a row: Emu3's ``<|extra_200|>``, LLaVA-NeXT / OneVision's ``image_newline``.

    Example:
        >>> ImageGrid.rows(2, 3, offset=9)    # 9 base features, then 2 rows of 3 + newline
        ImageGrid(n_tokens=17, eol=(12, 16))
    """

    n_tokens: int
    eol: tuple[int, ...] = ()

    @classmethod
    def rows(cls, rows: int, cols: int, offset: int = 0) -> ImageGrid:
        """``offset`` leading placeholders, then ``rows`` rows of ``cols`` + 1 end-of-line."""
        eol = tuple(offset + (r + 1) * (cols + 1) - 1 for r in range(rows))
        return cls(offset + rows * (cols + 1), eol)


@dataclass(frozen=True)
class Injection:
    """Where image information enters the residual stream outside attention.

    After decoder block ``layer``, features are added at the positions of token group
    ``group``; hook point ``hook`` (``[batch, pos, d_model]``, zero elsewhere) carries them, so
    ``blocks.{layer+1}.hook_resid_pre = blocks.{layer}.hook_resid_post + hook``. Qwen3-VL's
    DeepStack adds features of early vision blocks this way.

    Example:
        >>> layout.injections[0]
        Injection(layer=0, hook='blocks.0.hook_deepstack', group='image_patches')
    """

    layer: int
    hook: str
    group: str = "image_patches"


@dataclass
class TokenLayout:
    """Per-example positions of each token group (see the module docstring for the groups).

    ``attention_blocks`` names the bidirectional attention the model applies on top of causal
    attention, as HF's ``block_sequence_ids``: ``[batch, pos]``, -1 where attention is causal,
    ``k >= 0`` for the positions of block ``k``, which all attend to each other (Gemma 3's
    images, PaliGemma's image + prompt prefix, Molmo 2's image tokens); ``None`` for causal
    models. ``injections`` lists where image features enter the residual stream outside
    attention (:class:`Injection`).
    """

    masks: dict[str, Bool[Tensor, "batch pos"]]
    spans: list[list[ImageSpan]]
    tokens: SpecialTokens
    architecture: str = ""
    notes: str = ""
    patch_rule: PatchRule | None = None  # how the image's patch tokens form a grid (patch_grid)
    attention_blocks: Int[Tensor, "batch pos"] | None = None
    injections: tuple[Injection, ...] = ()
    _cache: dict[str, list[Tensor]] = field(default_factory=dict, repr=False)

    @property
    def batch_size(self) -> int:
        return self.masks["text"].shape[0]

    @property
    def seq_len(self) -> int:
        return self.masks["text"].shape[1]

    def mask(self, name: str, frame: int | None = None) -> Bool[Tensor, "batch pos"]:
        """Bool mask ``[batch, pos]`` of group ``name`` (may be empty for some examples);
        with ``frame``, only the positions of video frame ``frame`` (of every video).

        Example:
            >>> layout.mask("image", frame=0)   # the first frame of each example's video
        """
        self._check_name(name)
        if frame is None:
            return self.masks[name]
        return self.masks[name] & self._frame_mask(name, frame)

    def select(
        self, name: str, allow_empty: bool = False, frame: int | None = None
    ) -> list[Int[Tensor, " n"]]:
        """Positions of group ``name``, one 1-D tensor per example; with ``frame``, those of
        video frame ``frame`` only.

        Raises :class:`LayoutError` when an example has none, unless ``allow_empty``: an empty
        selection is almost always a mistake (asking for EOI on a text-only example, say).

        Example:
            >>> layout.select("eoi", frame=3)   # Qwen3-VL: each example's 4th frame's EOI
        """
        key = name if frame is None else f"{name}@frame={frame}"
        if key not in self._cache:
            self._cache[key] = [row.nonzero().flatten() for row in self.mask(name, frame)]
        positions = self._cache[key]
        if not allow_empty:
            empty = [i for i, p in enumerate(positions) if p.numel() == 0]
            if empty:
                message = self._empty_message(name, empty)
                if frame is not None:
                    message = self._empty_frame_message(name, frame, empty, message)
                raise LayoutError(message)
        return positions

    def frames(self) -> list[int]:
        """The number of video frames in each example (0 without a video)."""
        return [sum(s.frame is not None for s in spans) for spans in self.spans]

    def _frame_mask(self, name: str, frame: int) -> Bool[Tensor, "batch pos"]:
        if name not in IMAGE_GROUPS:
            raise LayoutError(
                f"group {name!r} is not part of an image, so it has no frames; frame= "
                f"selects among the image groups: {', '.join(sorted(IMAGE_GROUPS))}."
            )
        if isinstance(frame, bool) or not isinstance(frame, int) or frame < 0:
            raise LayoutError(f"frame must be a frame index (int >= 0), got {frame!r}.")
        owned = torch.zeros_like(self.masks["text"])
        for b, spans in enumerate(self.spans):
            for span in spans:
                if span.frame == frame:
                    owned[b, list(span.positions)] = True
        return owned.to(self.masks[name].device)

    def _empty_frame_message(
        self, name: str, frame: int, empty: Sequence[int], message: str
    ) -> str:
        frames = self.frames()
        short = [b for b in empty if frames[b] <= frame]
        if short:
            return (
                f"example(s) {short} have {[frames[b] for b in short]} video frame(s), so "
                f"frame {frame} does not exist (frames are numbered from 0; a layout marks "
                "them from the model's video inputs, or from video_frames= where frames are "
                "images, see the family's notes)."
            )
        return (
            f"frame {frame} of example(s) {list(empty)} has no {name!r} position: "
            f"{self.notes} ({message})"
        )

    def gather(
        self, activations: Float[Tensor, "batch pos *rest"], name: str
    ) -> Float[Tensor, "batch n *rest"]:
        """The activations at group ``name``'s positions, ``[batch, n, ...]``.

        Every example must have the same number ``n`` of positions in the group (one EOI per
        example, say); otherwise use :meth:`select` and index per example.

        Example:
            >>> eoi_resid = layout.gather(cache["blocks.12.hook_resid_post"], "eoi")  # [b, 1, d]
        """
        positions = self.select(name)
        counts = {int(p.numel()) for p in positions}
        if len(counts) != 1:
            raise LayoutError(
                f"group {name!r} has {[int(p.numel()) for p in positions]} positions per "
                "example: gather needs the same count in each; use select() per example."
            )
        if activations.shape[:2] != (self.batch_size, self.seq_len):
            raise LayoutError(
                f"activations of shape {tuple(activations.shape)} do not start with this "
                f"layout's [batch, pos] = [{self.batch_size}, {self.seq_len}]."
            )
        index = torch.stack(positions).to(activations.device)
        return activations[torch.arange(self.batch_size, device=activations.device)[:, None], index]

    def n_images(self) -> list[int]:
        """Number of images in each example."""
        return [len(s) for s in self.spans]

    def to(self, device: torch.device | str) -> TokenLayout:
        """The same layout with its masks on ``device``."""
        masks = {k: v.to(device) for k, v in self.masks.items()}
        return self.replace(masks=masks)

    def replace(self, **changes: object) -> TokenLayout:
        """A copy with ``changes`` (``masks``, ``spans``, ...); the group cache starts empty.

        Example:
            >>> repeated = layout.replace(masks=..., spans=...)
        """
        return dataclasses.replace(self, _cache={}, **changes)

    def _check_name(self, name: str) -> None:
        if name in self.masks:
            return
        raise LayoutError(
            f"unknown token group {name!r}. Token groups: {', '.join(GROUPS)} "
            "(see hooked_vlm.layout.token_layout)."
        )

    def _empty_message(self, name: str, empty: Sequence[int]) -> str:
        which = f"example(s) {list(empty)}"
        role = "row_break" if name == "eol" else name
        if role in self.tokens.unknown:
            return (
                f"the id of {self.architecture or 'this model'}'s {name.upper()} token is "
                f"unknown (the model has one, but its HF config lacks the id and no tokenizer "
                f"or model config gave it), so group {name!r} is empty for {which}. Load with "
                "HookedVLM.from_pretrained (the processor supplies it), pass the processor and "
                "model_config to from_hf, or name the id yourself: "
                f"HookedVLM.from_hf(model, special_tokens={{{role!r}: ID}})."
            )
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
    grids: Sequence[ImageGrid] | None = None,
    tokens_per_image: int | None = None,
    architecture: str = "",
    notes: str = "",
    patch_rule: PatchRule | None = None,
    attention_blocks: Int[Tensor, "batch pos"] | None = None,
    injections: Sequence[Injection] = (),
    videos: Sequence[VideoGrid] | None = None,
    video_frames: Sequence[int] | None = None,
) -> TokenLayout:
    """Compute the :class:`TokenLayout` of a (possibly padded) batch.

    Args:
        input_ids: token ids ``[batch, pos]``, left- or right-padded.
        tokens: the architecture's special token ids.
        attention_mask: 1 for real tokens, 0 for padding; ``None`` means no padding.
        grids: one :class:`ImageGrid` per image in batch order, for layouts whose end-of-line
            tokens are image placeholders (Emu3, LLaVA-NeXT / OneVision).
        tokens_per_image: placeholders per image, to split adjacent images of equal size.
        patch_rule: how each image's patch tokens form a grid
            (:mod:`hooked_vlm.layout.patch_grid`), for ``patch_grid``.
        attention_blocks: bidirectional attention blocks ``[batch, pos]`` (-1: causal), as
            the model builds them from these inputs (see :class:`TokenLayout`).
        injections: where image features enter the residual stream outside attention.
        videos: one :class:`VideoGrid` per video in batch order, for families whose videos
            have placeholders of their own (``tokens.video``): each video's span is split
            into frames (Qwen2-VL: one span per video), or its frame spans are numbered
            (Qwen3-VL: one span per frame).
        video_frames: per example, how many of its last image spans are frames of a video,
            for families whose frames are plain images to the model (SmolVLM).

    Example:
        >>> build_layout(ids, SpecialTokens(image=3, boi=4, eoi=5)).select("eoi")
    """
    if input_ids.ndim != 2:
        raise LayoutError(f"input_ids must be [batch, pos], got shape {tuple(input_ids.shape)}")
    ids = input_ids.detach().cpu()
    real = (
        torch.ones_like(ids, dtype=torch.bool)
        if attention_mask is None
        else attention_mask.detach().cpu().bool()
    )
    queue = list(grids) if grids is not None else None
    spans = [
        _spans_of(ids[b], real[b], tokens, queue, tokens_per_image) for b in range(ids.shape[0])
    ]
    if queue:
        raise LayoutError(
            "more image grids/sizes were given than images found in input_ids: check that "
            "image_sizes (and image_grid_thw) match the images in the prompts."
        )
    if videos is not None or video_frames is not None or tokens.video is not None:
        spans = _number_frames(ids, spans, tokens, videos, video_frames)
    masks = _masks_from_spans(ids, real, spans, tokens)
    if attention_blocks is not None:
        if tuple(attention_blocks.shape) != tuple(ids.shape):
            raise LayoutError(
                f"attention_blocks of shape {tuple(attention_blocks.shape)} do not match "
                f"input_ids {tuple(ids.shape)}."
            )
        attention_blocks = attention_blocks.detach().cpu().long()
    return TokenLayout(
        masks, spans, tokens, architecture, notes, patch_rule, attention_blocks, tuple(injections)
    )


def _runs(flags: Tensor) -> list[tuple[int, int]]:
    """Inclusive (start, end) of each run of True in a 1-D bool tensor."""
    padded = torch.cat([torch.tensor([False]), flags, torch.tensor([False])]).int()
    edges = padded.diff()
    starts = (edges == 1).nonzero().flatten().tolist()
    ends = ((edges == -1).nonzero().flatten() - 1).tolist()
    return list(zip(starts, ends, strict=True))


def _isin(ids: Tensor, members: Sequence[int | None]) -> Tensor:
    return torch.isin(ids, torch.tensor([m for m in members if m is not None], dtype=ids.dtype))


def _number_frames(
    ids: Tensor,
    spans: list[list[ImageSpan]],
    tokens: SpecialTokens,
    videos: Sequence[VideoGrid] | None,
    video_frames: Sequence[int] | None,
) -> list[list[ImageSpan]]:
    """Mark video frames: split each video span into its frames, or number frame spans."""
    queue = list(videos or [])
    counts = list(video_frames) if video_frames is not None else None
    if counts is not None and len(counts) != len(spans):
        raise LayoutError(
            f"video_frames gives {len(counts)} count(s) for {len(spans)} example(s): pass one "
            "per example (0 where the example has no video)."
        )
    n_videos, out = 0, []
    for b, example in enumerate(spans):
        first_frame = len(example) - (counts[b] if counts is not None else 0)
        if first_frame < 0:
            raise LayoutError(
                f"video_frames says example {b} holds {counts[b]} frames, but it has only "
                f"{len(example)} image span(s)."
            )
        numbered: list[ImageSpan] = []
        current: list[Any] | None = None  # [video index, grid, next frame]
        for i, span in enumerate(example):
            if i >= first_frame:
                if i == first_frame:
                    n_videos += 1
                numbered.append(dataclasses.replace(span, frame=i - first_frame,
                                                    video=n_videos - 1))
                continue
            video_ids = ids[b, span.start : span.end + 1] == (-1 if tokens.video is None
                                                               else tokens.video)
            count = int(video_ids.sum())
            if count == 0:
                numbered.append(span)
                continue
            if current is None:
                if not queue:
                    raise LayoutError(
                        f"example {b} holds a video (video placeholder {tokens.video}) but no "
                        "video grid is left for it: pass video_grid_thw as the processor "
                        "returns it, one (t, h, w) per video."
                    )
                current = [n_videos, queue.pop(0), 0]
                n_videos += 1
            video, grid, frame = current
            if frame == 0 and count == grid.frames * grid.per_frame:  # a whole video
                numbered += _split_frames(span, grid, video)
                current = None
            elif count == grid.per_frame:  # one frame of it
                numbered.append(dataclasses.replace(span, frame=frame, video=video))
                current[2] += 1
                if current[2] == grid.frames:
                    current = None
            else:
                raise LayoutError(
                    f"the video span at positions {span.start}..{span.end} of example {b} holds "
                    f"{count} video placeholders, but its video grid gives {grid.frames} "
                    f"frame(s) of {grid.per_frame}: check video_grid_thw against the prompt."
                )
        if current is not None:
            raise LayoutError(
                f"example {b} ends after frame {current[2] - 1} of a video of "
                f"{current[1].frames} frames: check video_grid_thw against the prompt."
            )
        out.append(numbered)
    if queue:
        raise LayoutError(
            f"{len(queue)} video grid(s) were given beyond the videos found in input_ids: check "
            "video_grid_thw against the prompts."
        )
    return out


def _split_frames(span: ImageSpan, grid: VideoGrid, video: int) -> list[ImageSpan]:
    """A video's span cut into its frames: BOI (and header) on the first, EOI on the last."""
    frames = []
    for k in range(grid.frames):
        start = span.start + k * grid.per_frame
        end = start + grid.per_frame - 1
        frames.append(ImageSpan(
            start, end,
            boi=span.boi if k == 0 else None,
            eoi=span.eoi if k == grid.frames - 1 else None,
            eof=span.eof if k == grid.frames - 1 else None,
            meta=tuple(p for p in span.meta if p <= end and (k == 0 or p >= start)),
            eol=tuple(p for p in span.eol if start <= p <= end),
            frame=k, video=video,
        ))
    return frames


def _content_runs(ids: Tensor, real: Tensor, tokens: SpecialTokens) -> list[tuple[int, int]]:
    """Runs of content ids holding a placeholder, joined across row-break-only gaps."""
    content = _isin(ids, [tokens.image, tokens.video, tokens.eof, *tokens.image_inner]) & real
    breaks = _isin(ids, [tokens.row_break]) & real
    placeholder = _isin(ids, [tokens.image, tokens.video]) & real
    runs: list[tuple[int, int]] = []
    for start, end in _runs(content):
        if runs and bool(breaks[runs[-1][1] + 1 : start].all()):
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((start, end))
    return [(s, e) for s, e in runs if bool(placeholder[s : e + 1].any())]


def _spans_of(
    ids: Tensor,
    real: Tensor,
    tokens: SpecialTokens,
    grids: list[ImageGrid] | None,
    tokens_per_image: int | None,
) -> list[ImageSpan]:
    spans: list[ImageSpan] = []
    previous_end = -1
    runs = _content_runs(ids, real, tokens)
    for start, end, grid in _split_runs(ids, runs, tokens, tokens_per_image, grids):
        # BOI / EOI ids that also serve inside the span (Molmo 2's <im_end> closes both its
        # low- and high-resolution views) close it from within: the run's last id is the EOI
        if tokens.eoi in tokens.image_inner and end > start and int(ids[end]) == tokens.eoi:
            end -= 1
        if tokens.boi in tokens.image_inner and end > start and int(ids[start]) == tokens.boi:
            start += 1
        boi = _find_boi(ids, real, start, previous_end, tokens.boi)
        eoi = end + 1 if _is(ids, real, end + 1, tokens.eoi) else None
        eof = end if _is(ids, real, end, tokens.eof) else None
        inside = range(start, end + 1)
        eol = [p for p in inside if _is(ids, real, p, tokens.row_break)]
        if grid is not None:
            eol += _grid_eols(ids, start, end, tokens.image, grid)
        meta = [p for p in inside if int(ids[p]) in tokens.image_inner]
        if boi is not None:
            meta = [*range(boi + 1, start), *meta]
        spans.append(ImageSpan(start, end, boi, eoi, eof, tuple(meta), tuple(sorted(eol))))
        previous_end = eoi if eoi is not None else end
    return spans


def _split_runs(
    ids: Tensor,
    runs: list[tuple[int, int]],
    tokens: SpecialTokens,
    per_image: int | None,
    grids: list[ImageGrid] | None,
) -> list[tuple[int, int, ImageGrid | None]]:
    """Pair each run with its grid; split runs holding several adjacent images.

    Without BOI/EOI ids, adjacent images form one run: split by ``per_image`` (equal sizes)
    or by the sizes of the next grids.
    """
    out: list[tuple[int, int, ImageGrid | None]] = []
    delimited = tokens.boi is not None or tokens.eoi is not None
    for start, end in runs:
        length = end - start + 1
        if grids is not None:
            if not grids:
                raise LayoutError(
                    "fewer image grids/sizes were given than images found in input_ids: pass "
                    "one image size per image."
                )
            while not delimited and len(grids) > 1 and grids[0].n_tokens < length:
                grid = grids.pop(0)
                out.append((start, start + grid.n_tokens - 1, grid))
                start, length = start + grid.n_tokens, length - grid.n_tokens
            out.append((start, end, grids.pop(0)))
        elif not delimited and per_image and length > per_image and length % per_image == 0:
            out += [(s, s + per_image - 1, None) for s in range(start, end + 1, per_image)]
        else:
            out.append((start, end, None))
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


def _grid_eols(ids: Tensor, start: int, end: int, image: int, grid: ImageGrid) -> list[int]:
    """Positions of the grid's end-of-line placeholders inside one image run."""
    placeholders = [p for p in range(start, end + 1) if ids[p] == image]
    if len(placeholders) != grid.n_tokens:
        raise LayoutError(
            f"the image at positions {start}..{end} has {len(placeholders)} placeholders, but "
            f"its size gives {grid.n_tokens} (rows of features, each closed by an end-of-line). "
            "Check image_sizes against the prompt."
        )
    return [placeholders[offset] for offset in grid.eol]


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
            m["last"][b, int(real_pos[-1])] = True
            # BOS opens the text: the first real token, or the first after images that lead
            # the sequence (PaliGemma puts its image before <bos>)
            image_side = m["image"][b] | m["boi"][b] | m["eoi"][b] | m["image_meta"][b]
            first = next((int(p) for p in real_pos if not image_side[p]), None)
            if first is not None and tokens.bos is not None and ids[b, first] == tokens.bos:
                m["bos"][b, first] = True
    m["image_patches"] = m["image"] & ~m["eol"] & ~m["eof"] & ~m["image_meta"]
    m["image_and_eoi"] = m["image"] | m["eoi"]
    not_text = m["bos"] | m["boi"] | m["image_meta"] | m["image"] | m["eoi"]
    m["text"] = real & ~not_text
    return m
