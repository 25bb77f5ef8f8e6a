"""TokenLayout per architecture: groups, left/right padding, several images per sequence."""

from __future__ import annotations

import pytest
import torch

from hooked_vlm import LayoutError
from hooked_vlm.layout import GROUPS
from tests.conftest import Wrapped, wrap

PAD = 0


@pytest.fixture(scope="module", params=["llava", "chameleon", "emu3"])
def arch(request) -> Wrapped:
    return wrap(request.param)


def layout_of(w: Wrapped, ids, mask=None, **extras):
    if "image_sizes" in w.inputs and "image_sizes" not in extras:
        extras["image_sizes"] = w.inputs["image_sizes"]
    return w.model.layout(ids, attention_mask=mask, **extras)


def pad(ids: torch.Tensor, n: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    fill = torch.full((ids.shape[0], n), PAD)
    ones, zeros = torch.ones_like(ids), torch.zeros_like(fill)
    if side == "left":
        return torch.cat([fill, ids], 1), torch.cat([zeros, ones], 1)
    return torch.cat([ids, fill], 1), torch.cat([ones, zeros], 1)


def test_groups_partition_the_real_positions(arch: Wrapped):
    ids = arch.inputs["input_ids"]
    layout = layout_of(arch, ids)
    parts = ["bos", "boi", "image_meta", "image", "eoi", "text"]
    total = sum(layout.mask(p).int() for p in parts)
    assert torch.equal(total, torch.ones_like(ids, dtype=torch.int))
    assert layout.n_images() == [1, 1]
    image_id = arch.model.architecture.special_tokens(arch.model.hf_model.config).image
    placeholders = (ids == image_id)
    assert torch.equal(placeholders & layout.mask("image"), placeholders)
    assert layout.mask("image").sum(1).tolist() == [
        arch.tiny.n_image_tokens + int(layout.mask("eof")[b].sum()) for b in range(2)
    ]
    # every group has a name in GROUPS, and the last position is the last token
    assert set(layout.masks) == set(GROUPS)
    assert [int(p) for (p,) in layout.select("last")] == [ids.shape[1] - 1] * 2


def test_native_layouts_find_boi_and_eoi_around_the_image(arch: Wrapped):
    layout = layout_of(arch, arch.inputs["input_ids"])
    if not arch.model.cfg.native:
        with pytest.raises(LayoutError, match="no EOI token.*last_image"):
            layout.select("eoi")
        return
    for b, span in enumerate(s[0] for s in layout.spans):
        assert span.boi is not None and span.boi < span.start
        assert span.eoi == span.end + 1
        assert int(layout.select("eoi")[b]) == span.eoi
        assert int(layout.select("last_image")[b]) == span.end


def test_emu3_rows_end_with_eol_then_eof():
    w = wrap("emu3")
    layout = layout_of(w, w.inputs["input_ids"])
    rows, cols = w.tiny.extras["grid"]
    span = layout.spans[0][0]
    assert len(span.eol) == rows
    assert [p - span.start for p in span.eol] == [(r + 1) * (cols + 1) - 1 for r in range(rows)]
    assert span.eof == span.end and span.eoi == span.end + 1
    assert len(span.meta) == 4  # "{h} * {w} <|image token|>"
    assert layout.mask("image_patches").sum().item() == 2 * rows * cols


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_shifts_positions_and_is_never_text(arch: Wrapped, side: str):
    ids = arch.inputs["input_ids"]
    base = layout_of(arch, ids)
    padded_ids, mask = pad(ids, 3, side)
    padded = layout_of(arch, padded_ids, mask)
    shift = 3 if side == "left" else 0
    for name in ("text", "image", "last", "bos", "image_and_eoi"):
        for b in range(2):
            assert torch.equal(padded.select(name)[b], base.select(name)[b] + shift), name
    assert not (padded.mask("text") & ~mask.bool()).any()


def test_mixed_padding_in_one_batch(arch: Wrapped):
    ids = arch.inputs["input_ids"]
    short = ids[1, 2:]  # drop two leading tokens from example 1 and left-pad it
    padded = torch.stack([ids[0], torch.cat([torch.full((2,), PAD), short])])
    mask = torch.ones_like(padded)
    mask[1, :2] = 0
    layout = layout_of(arch, padded, mask)
    assert int(layout.select("last")[1]) == ids.shape[1] - 1
    assert not layout.mask("bos")[1].any()  # BOS was cut off example 1
    assert layout.mask("image")[0].sum() == layout.mask("image")[1].sum()


def test_two_images_per_sequence(arch: Wrapped):
    ids = arch.inputs["input_ids"][0]
    one = {"image_sizes": arch.inputs["image_sizes"][:1]} if "image_sizes" in arch.inputs else {}
    layout0 = layout_of(arch, ids[None], **one)
    span = layout0.spans[0][0]
    start = span.boi if span.boi is not None else span.start
    end = span.eoi if span.eoi is not None else span.end
    image_block = ids[start : end + 1]
    text = torch.tensor([ids[1].item(), ids[-1].item()])
    two = torch.cat([ids[:start], image_block, text, image_block, text])[None]
    extras = {}
    if "image_sizes" in arch.inputs:
        extras["image_sizes"] = arch.inputs["image_sizes"][:1].repeat(2, 1)
    layout = layout_of(arch, two, **extras)
    assert layout.n_images() == [2]
    first, second = layout.spans[0]
    assert second.start == first.start + len(image_block) + len(text)
    after_first = start + len(image_block)
    assert layout.mask("text")[0, after_first : after_first + len(text)].all()
    assert layout.mask("image")[0].sum() == 2 * layout0.mask("image")[0].sum()
    if arch.model.cfg.native:
        assert len(layout.select("eoi")[0]) == 2


def test_adjacent_llava_images_are_split():
    w = wrap("llava")
    ids = w.inputs["input_ids"][0]
    image_id = 3
    n = w.tiny.n_image_tokens
    two = torch.cat([ids[:2], torch.full((2 * n,), image_id), ids[-2:]])[None]
    layout = w.model.layout(two)
    assert layout.n_images() == [2]
    assert layout.select("last_image")[0].tolist() == [2 + n - 1, 2 + 2 * n - 1]


def test_selecting_image_groups_without_an_image_is_a_clear_error(arch: Wrapped):
    ids = arch.inputs["input_ids"]
    span = layout_of(arch, ids).spans[1][0]
    first = span.boi if span.boi is not None else span.start
    last = span.eoi if span.eoi is not None else span.end
    text_only = ids.clone()
    text_only[1, first : last + 1] = ids[1, -1]  # example 1: the image block becomes text
    one = {"image_sizes": arch.inputs["image_sizes"][:1]} if "image_sizes" in arch.inputs else {}
    layout = arch.model.layout(text_only, **one)
    name = "eoi" if arch.model.cfg.native else "image"
    with pytest.raises(LayoutError, match=r"example\(s\) \[1\] contain no image"):
        layout.select(name)
    assert layout.select(name, allow_empty=True)[1].numel() == 0
    with pytest.raises(LayoutError, match="unknown token group 'eos'"):
        layout.select("eos")


def test_gather_picks_each_examples_positions(arch: Wrapped):
    ids = arch.inputs["input_ids"]
    layout = layout_of(arch, ids)
    values = torch.arange(ids.numel(), dtype=torch.float).reshape(*ids.shape, 1).expand(-1, -1, 3)
    last = layout.gather(values, "last")
    assert last.shape == (2, 1, 3)
    assert last[:, 0, 0].tolist() == [float(b * ids.shape[1] + ids.shape[1] - 1) for b in range(2)]
    image = layout.gather(values, "image")
    assert image.shape[:2] == (2, int(layout.mask("image")[0].sum()))
    with pytest.raises(LayoutError, match=r"do not start with this layout's \[batch, pos\]"):
        layout.gather(values[:, 1:], "last")
