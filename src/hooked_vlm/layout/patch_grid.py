"""Where each patch of a picture sits in the sequence: an image's patch tokens as a 2-D grid.

:func:`patch_grid` gives, for one image of one example, the ``[rows, cols]`` tensor of sequence
positions of its patch tokens in spatial (raster) order, so that any per-position quantity
(attention to the image keys, an attribution score) can be drawn over the picture. Only the
layout and the processor's outputs are read; no model runs.

Each architecture says how its placeholders form a grid with one *patch rule* (stored on the
:class:`~hooked_vlm.layout.TokenLayout` by ``model.layout``):

==================  ==================================================  =======================
rule                families                                            views
==================  ==================================================  =======================
SquarePatches       Chameleon (VQ codes), LLaVA-1.5 (after the CLS of   ``image``
                    the "full" strategy), Janus, Gemma 3, PaliGemma
RowPatches          Emu3 (rows end in EOL), Pixtral / Mistral3 (rows    ``image``
                    separated by ``[IMG_BREAK]``)
MergedPatches       Qwen2-VL / 2.5-VL / 3-VL (``image_grid_thw`` t, h,  ``image``
                    w, 2x2 merge)
AnyresPatches       LLaVA-NeXT / OneVision                              ``highres``, ``base``
TiledPatches        InternVL (tiles + thumbnail), Idefics3 / SmolVLM    ``tiles``, ``thumbnail``
                    (tiles + global image)                              / ``global``
PooledViews         Molmo 2 (``image_grids``: low-res view + crops)     ``high_res``, ``low_res``
==================  ==================================================  =======================

Every view covers the whole picture the model saw (the processed image): a tiled view is the
tiles put back side by side (``PatchGrid.tiles`` says how many), LLaVA-NeXT's ``highres`` is HF's
unpadded high-resolution grid; ``base``, ``thumbnail`` and ``global`` are the whole picture at
tile size. The first view is the default. Row-end, EOL/EOF, BOI/EOI and tile-tag tokens are
never in a grid.

Example:
    >>> layout = model.layout(**inputs)
    >>> grid = patch_grid(layout, example=0, **inputs)   # the first image of example 0
    >>> grid.positions.shape                              # torch.Size([24, 24]) for LLaVA-1.5
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from einops import rearrange
from jaxtyping import Int
from torch import Tensor

from hooked_vlm.layout.token_layout import ImageSpan, LayoutError, TokenLayout


@dataclass(frozen=True)
class PatchGrid:
    """Sequence positions of one view of one image, ``[rows, cols]`` in raster order.

    ``tiles``: the grid is ``tiles[0] x tiles[1]`` equal tiles that the vision tower encoded
    separately (InternVL and Idefics3 crops), side by side as in the picture.
    """

    positions: Int[Tensor, "rows cols"]
    view: str
    tiles: tuple[int, int] = (1, 1)

    @property
    def shape(self) -> tuple[int, int]:
        rows, cols = self.positions.shape
        return int(rows), int(cols)


@dataclass(frozen=True)
class ImagePatches:
    """What a patch rule reads about one image: its patch positions (ascending), its span,
    its index among all images of the batch, the processor's outputs and any tile layout."""

    positions: Int[Tensor, " n"]
    span: ImageSpan
    index: int
    inputs: Mapping[str, Any]
    tiles: tuple[int, int] | None
    where: str  # "example 0, image 1", for messages


class PatchRule(Protocol):
    """How one architecture's patch tokens form grids (one class per kind below)."""

    def views(self, image: ImagePatches) -> dict[str, PatchGrid]: ...


@dataclass(frozen=True)
class SquarePatches:
    """``leading`` features (the CLS of LLaVA-1.5's "full" strategy), then ``side x side``."""

    side: int
    leading: int = 0

    def views(self, image: ImagePatches) -> dict[str, PatchGrid]:
        n, expected = image.positions.numel(), self.leading + self.side**2
        if n != expected:
            lead = f"{self.leading} leading feature(s) + " if self.leading else ""
            raise LayoutError(
                f"{image.where} has {n} patch tokens; this model's grid has {lead}"
                f"{self.side}x{self.side} = {expected}. Build the layout with this model's "
                "model.layout and a prompt made by its processor."
            )
        grid = rearrange(image.positions[self.leading :], "(r c) -> r c", r=self.side)
        return {"image": PatchGrid(grid, "image")}


@dataclass(frozen=True)
class RowPatches:
    """Rows of features closed (Emu3's EOL) or separated (Pixtral's ``[IMG_BREAK]``) by the
    span's end-of-line tokens."""

    def views(self, image: ImagePatches) -> dict[str, PatchGrid]:
        return {"image": PatchGrid(_rows(image.positions, image.span.eol, image.where), "image")}


@dataclass(frozen=True)
class MergedPatches:
    """Qwen-VL: ``image_grid_thw`` ``(t, h, w)`` patches merged ``merge x merge`` gives
    ``(h / merge) x (w / merge)`` tokens in raster order; a video frame's grid is its video's
    row of ``video_grid_thw``."""

    merge: int

    def views(self, image: ImagePatches) -> dict[str, PatchGrid]:
        frame = image.span.frame is not None
        key, row = ("video_grid_thw", image.span.video) if frame else ("image_grid_thw",
                                                                       image.index)
        thw = image.inputs.get(key)
        what = "video" if frame else "image"
        if thw is None:
            raise LayoutError(
                f"the patch grid of {image.where} needs `{key}` (one (t, h, w) per {what}, as "
                "the processor returns it): pass patch_grid(layout, ..., **inputs)."
            )
        if row >= len(thw):
            raise LayoutError(
                f"{image.where} is {what} {row} of the batch, but {key} has {len(thw)} rows: "
                f"pass the {key} of this batch."
            )
        t, h, w = (int(x) for x in thw[row])
        rows, cols = h // self.merge, w // self.merge
        if (t != 1 and not frame) or rows * cols != image.positions.numel():
            raise LayoutError(
                f"{image.where} has {image.positions.numel()} patch tokens, but its {key} "
                f"({t}, {h}, {w}) with a {self.merge}x{self.merge} merge gives {rows} x {cols} "
                f"per frame{'' if frame else ' and a still image has t = 1'}."
            )
        return {"image": PatchGrid(rearrange(image.positions, "(r c) -> r c", r=rows), "image")}


@dataclass(frozen=True)
class PooledViews:
    """Molmo 2: a low-resolution view of the whole picture, then the high-resolution crops
    joined into one grid, sized by ``image_grids`` (one ``(low_rows, low_cols, high_rows,
    high_cols)`` per image, as the processor returns it); column tokens are end-of-line.

    Views: ``high_res`` (when the image has one) then ``low_res``.
    """

    def views(self, image: ImagePatches) -> dict[str, PatchGrid]:
        grids = image.inputs.get("image_grids")
        if grids is None or image.index >= len(grids):
            raise LayoutError(
                f"the patch grid of {image.where} needs `image_grids` (one (low_rows, "
                "low_cols, high_rows, high_cols) per image of the batch, as the processor "
                "returns it): pass patch_grid(layout, ..., **inputs)."
            )
        low_h, low_w, high_h, high_w = (int(x) for x in grids[image.index])
        n, low = image.positions.numel(), low_h * low_w
        if n != low + high_h * high_w:
            raise LayoutError(
                f"{image.where} has {n} patch tokens, but its image_grids row ({low_h}, "
                f"{low_w}, {high_h}, {high_w}) gives {low} + {high_h * high_w}."
            )
        views = {"low_res": PatchGrid(rearrange(image.positions[:low], "(r c) -> r c", r=low_h),
                                      "low_res")}
        if high_h * high_w:
            high = rearrange(image.positions[low:], "(r c) -> r c", r=high_h)
            views = {"high_res": PatchGrid(high, "high_res"), **views}
        return views


@dataclass(frozen=True)
class AnyresPatches:
    """LLaVA-NeXT / OneVision: ``side x side`` base-image features, then the unpadded
    high-resolution grid row by row, each row closed by ``image_newline`` (an end-of-line).

    Views: ``highres`` (when the image was tiled) then ``base``. An image of a OneVision
    multi-image prompt is one tile: its only view is ``base``.
    """

    side: int

    def views(self, image: ImagePatches) -> dict[str, PatchGrid]:
        n_base = self.side**2
        if image.positions.numel() < n_base:
            raise LayoutError(
                f"{image.where} has {image.positions.numel()} patch tokens, fewer than the "
                f"{self.side}x{self.side} base-image features every anyres image starts with."
            )
        base = rearrange(image.positions[:n_base], "(r c) -> r c", r=self.side)
        rest = image.positions[n_base:]
        views = {"base": PatchGrid(base, "base")}
        if rest.numel():
            high = _rows(rest, image.span.eol, image.where)
            views = {"highres": PatchGrid(high, "highres"), **views}
        return views


@dataclass(frozen=True)
class TiledPatches:
    """Crops of ``side x side`` tokens each, row-major over the picture, then one overview of
    the whole picture (InternVL's ``thumbnail``, Idefics3's ``global`` image).

    ``rows_from_eol``: the tile rows are closed by end-of-line tokens (Idefics3's ``\\n``), so
    the ids tell the arrangement; otherwise (InternVL) pass ``tiles=(rows, cols)``. An image
    that was not split is one tile: its only view is ``image``.
    """

    side: int
    overview: str
    rows_from_eol: bool

    def views(self, image: ImagePatches) -> dict[str, PatchGrid]:
        per_tile = self.side**2
        n = image.positions.numel()
        if n % per_tile:
            raise LayoutError(
                f"{image.where} has {n} patch tokens, not a whole number of {self.side}x"
                f"{self.side} tiles."
            )
        cells = rearrange(image.positions, "(k r c) -> k r c", r=self.side, c=self.side)
        if len(cells) == 1:
            return {"image": PatchGrid(cells[0], "image")}
        rows, cols = self._arrangement(image, len(cells) - 1)
        tiles = rearrange(cells[:-1], "(tr tc) r c -> (tr r) (tc c)", tr=rows, tc=cols)
        return {
            "tiles": PatchGrid(tiles, "tiles", (rows, cols)),
            self.overview: PatchGrid(cells[-1], self.overview),
        }

    def _arrangement(self, image: ImagePatches, n_crops: int) -> tuple[int, int]:
        if self.rows_from_eol:
            rows = len(image.span.eol) - 1  # one "\n" per tile row, one before the overview
            if rows < 1 or n_crops % rows:
                raise LayoutError(
                    f"{image.where} has {n_crops} tiles but {len(image.span.eol)} tile-row "
                    "ends: expected one per tile row plus one before the global image."
                )
            return rows, n_crops // rows
        if image.tiles is None:
            raise LayoutError(
                f"{image.where} is {n_crops} tiles + a {self.overview}, and the token ids do "
                "not tell how the tiles were arranged. Pass tiles=(rows, cols): InternVL's "
                "processor takes them from the picture's aspect ratio, "
                "transformers.models.got_ocr2.image_processing_got_ocr2.get_optimal_tiled_"
                "canvas((height, width), (tile, tile), min_patches, max_patches), which returns "
                "(cols, rows)."
            )
        rows, cols = image.tiles
        if rows * cols != n_crops:
            raise LayoutError(
                f"tiles={image.tiles} gives {rows * cols} tiles, but {image.where} has "
                f"{n_crops} tiles + a {self.overview}."
            )
        return rows, cols


def patch_grids(
    layout: TokenLayout,
    example: int,
    image: int = 0,
    tiles: tuple[int, int] | None = None,
    **inputs: Any,
) -> dict[str, PatchGrid]:
    """Every view of image ``image`` of example ``example``, the default view first.

    Args:
        layout: a layout from ``model.layout`` (it carries the architecture's patch rule).
        example: the example (batch row).
        image: which image of that example (0 for the first); video frames count as images,
            one each (``layout.spans[example][image].frame`` says which frame).
        tiles: ``(rows, cols)`` of the crops, for InternVL images split into tiles; where the
            ids tell the arrangement it is checked against them.
        inputs: the processor's outputs; ``image_grid_thw`` is read (Qwen2-VL), other keys are
            accepted so ``**inputs`` can be passed whole.

    Example:
        >>> patch_grids(layout, 0, **inputs).keys()     # LLaVA-NeXT: dict_keys(['highres', 'base'])
    """
    rule = layout.patch_rule
    if rule is None:
        raise LayoutError(
            "this layout has no patch rule: build it with model.layout(...) (which knows the "
            "architecture), or pass patch_rule= to build_layout."
        )
    span = _span(layout, example, image)
    patches = layout.mask("image_patches")[example, span.start : span.end + 1]
    # the image's row in per-image inputs (image_grid_thw, image_grids): still images only
    earlier = [s for spans in layout.spans[:example] for s in spans] + layout.spans[example][:image]
    index = sum(s.frame is None for s in earlier)
    where = f"example {example}, image {image}"
    views = rule.views(
        ImagePatches(patches.nonzero().flatten() + span.start, span, index, inputs, tiles, where)
    )
    if tiles is not None and all(g.tiles != tuple(tiles) for g in views.values()):
        found = [g.tiles for g in views.values()]
        raise LayoutError(f"tiles={tuple(tiles)} was given, but {where} is tiled as {found}.")
    return views


def patch_grid(
    layout: TokenLayout,
    example: int,
    image: int = 0,
    view: str | None = None,
    tiles: tuple[int, int] | None = None,
    **inputs: Any,
) -> PatchGrid:
    """One view (``None``: the default) of one image; see :func:`patch_grids`.

    Example:
        >>> grid = patch_grid(layout, 0, view="base", **inputs)
        >>> grid.positions            # [rows, cols] sequence positions
    """
    views = patch_grids(layout, example, image, tiles, **inputs)
    if view is None:
        return next(iter(views.values()))
    if view not in views:
        raise LayoutError(
            f"example {example}, image {image} has no {view!r} view; its views: {list(views)}."
        )
    return views[view]


def _span(layout: TokenLayout, example: int, image: int) -> ImageSpan:
    if not 0 <= example < layout.batch_size:
        raise LayoutError(
            f"example {example} does not exist: the layout has {layout.batch_size} example(s)."
        )
    spans = layout.spans[example]
    if not 0 <= image < len(spans):
        raise LayoutError(
            f"example {example} has {len(spans)} image(s), so image {image} does not exist "
            f"(images are numbered 0..{len(spans) - 1} in prompt order)."
        )
    return spans[image]


def _rows(positions: Tensor, eol: tuple[int, ...] | list[int], where: str) -> Tensor:
    """Split ``positions`` at the end-of-line positions ``eol`` into equal rows; a trailing
    empty row (the last row closed by an EOL, as in Emu3) is dropped."""
    cuts = torch.searchsorted(positions, torch.tensor(eol, dtype=positions.dtype))
    rows = list(torch.tensor_split(positions, cuts))
    if len(rows) > 1 and rows[-1].numel() == 0:
        rows.pop()
    lengths = [r.numel() for r in rows]
    if len(set(lengths)) != 1 or lengths[0] == 0:
        raise LayoutError(
            f"{where}: its end-of-line tokens split the patches into rows of lengths {lengths}; "
            "a grid needs equal, non-empty rows. Check image_sizes against the prompt."
        )
    return torch.stack(rows)
