"""TokenLayout of the encoder-based families: row breaks, anyres newlines, tiles, BOI/EOI."""

from __future__ import annotations

import pytest
import torch

from hooked_vlm import LayoutError
from tests.conftest import MORE_ARCHS, Wrapped, wrap


@pytest.fixture(scope="module", params=MORE_ARCHS)
def arch(request) -> Wrapped:
    return wrap(request.param)


def extras_of(w: Wrapped) -> dict[str, torch.Tensor]:
    return {k: v for k, v in w.inputs.items() if k not in ("input_ids", "pixel_values")}


def layout_of(w: Wrapped, ids: torch.Tensor | None = None, **overrides):
    ids = w.inputs["input_ids"] if ids is None else ids
    kw = extras_of(w)
    if ids.shape != w.inputs["input_ids"].shape:
        kw.pop("attention_mask", None)
    return w.model.layout(ids, **{**kw, **overrides})


def test_spans_cover_each_image_block(arch: Wrapped):
    layout = layout_of(arch)
    assert layout.n_images() == [1, 1]
    for b, (start, stop) in enumerate(arch.tiny.extras["image_spans"]):
        span = layout.spans[b][0]
        first = span.boi if span.boi is not None else span.start
        last = span.eoi if span.eoi is not None else span.end
        assert (first, last) == (start, stop - 1)
    ids = arch.inputs["input_ids"]
    placeholders = ids == arch.tiny.extras["image_id"]
    assert torch.equal(layout.mask("image_patches"), placeholders & ~layout.mask("eol"))
    covered = sum(layout.mask(g).int() for g in ("bos", "boi", "image", "eoi", "text"))
    assert torch.equal(covered, torch.ones_like(ids, dtype=torch.int))
    assert not (layout.mask("text") & layout.mask("image_meta")).any()


@pytest.mark.parametrize("name", ["pixtral", "mistral3"])
def test_pixtral_rows_break_and_end(name):
    w = wrap(name)
    layout = layout_of(w)
    for b, (rows, cols) in enumerate(w.tiny.extras["grids"]):
        span = layout.spans[b][0]
        ids = w.inputs["input_ids"][b]
        assert [int(ids[p]) for p in span.eol] == [w.tiny.extras["row_break_id"]] * (rows - 1)
        assert span.boi is None and int(ids[span.eoi]) == w.tiny.extras["eoi_id"]
        assert span.eol == tuple(span.start + (r + 1) * (cols + 1) - 1 for r in range(rows - 1))
        assert int(layout.mask("image_patches")[b].sum()) == rows * cols


@pytest.mark.parametrize("name", ["llava_next", "llava_onevision"])
def test_anyres_newlines_close_each_row(name):
    w = wrap(name)
    layout = layout_of(w)
    for b, info in enumerate(w.tiny.extras["layouts"]):
        span = layout.spans[b][0]
        rows, cols, base = info["rows"], info["cols"], info["base"]
        assert [p - span.start for p in span.eol] == [
            base + (r + 1) * (cols + 1) - 1 for r in range(rows)
        ]
        assert span.end - span.start + 1 == base + rows * (cols + 1)
    with pytest.raises(LayoutError, match="image_sizes"):
        w.model.layout(w.inputs["input_ids"])


def test_adjacent_anyres_images_are_split_by_their_sizes():
    w = wrap("llava_next")
    ids = w.inputs["input_ids"]
    (s0, e0), (s1, e1) = w.tiny.extras["image_spans"]
    two = torch.cat([ids[0, :s0], ids[0, s0:e0], ids[1, s1:e1], ids[0, e0:]])[None]
    layout = w.model.layout(two, image_sizes=w.inputs["image_sizes"])
    assert layout.n_images() == [2]
    first, second = layout.spans[0]
    assert (first.start, first.end, second.start) == (s0, e0 - 1, e0)
    assert len(first.eol) == 3 and len(second.eol) == 6


def test_idefics3_tiles_rows_and_global_image():
    w = wrap("idefics3")
    layout = layout_of(w)
    x = w.tiny.extras
    tags = {x["fake_id"], x["global_id"], *x["tile_ids"].values()}
    for b, (rows, cols) in enumerate(x["tiles"]):
        span = layout.spans[b][0]
        ids = w.inputs["input_ids"][b]
        assert int(ids[span.start]) == int(ids[span.end]) == x["fake_id"]
        assert all(int(ids[p]) in tags for p in span.meta)
        split = rows * cols if rows * cols > 1 else 0
        assert len(span.meta) == 2 * split + 3  # <fake><row_col> per tile + <fake><global><fake>
        assert [int(ids[p]) for p in span.eol] == [x["newline_id"]] * (rows + 1 if split else 0)
        n_tiles = split + 1
        assert int(layout.mask("image_patches")[b].sum()) == n_tiles * x["tokens_per_tile"]


@pytest.mark.parametrize("name", ["janus", "qwen2_vl", "internvl", "pixtral"])
def test_two_delimited_images_in_one_sequence(name):
    w = wrap(name)
    ids = w.inputs["input_ids"][0]
    start, stop = w.tiny.extras["image_spans"][0]
    block, text = ids[start:stop], ids[-2:]
    two = torch.cat([ids[:start], block, text, block, text])[None]
    extra = {}
    if "image_sizes" in w.inputs:
        extra["image_sizes"] = w.inputs["image_sizes"][:1].repeat(2, 1)
    layout = w.model.layout(two, **extra)
    assert layout.n_images() == [2]
    assert len(layout.select("eoi")[0]) == 2
    assert layout.mask("text")[0, stop : stop + 2].all()


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_shifts_every_group(arch: Wrapped, side: str):
    ids = arch.inputs["input_ids"]
    base = layout_of(arch)
    fill = torch.zeros(2, 3, dtype=ids.dtype)
    ones, zeros = torch.ones_like(ids), torch.zeros_like(fill)
    if side == "left":
        padded, mask = torch.cat([fill, ids], 1), torch.cat([zeros, ones], 1)
    else:
        padded, mask = torch.cat([ids, fill], 1), torch.cat([ones, zeros], 1)
    layout = layout_of(arch, padded, attention_mask=mask)
    shift = 3 if side == "left" else 0
    for name in ("image", "eol", "image_meta", "text", "last", "last_image"):
        for b in range(2):
            got = layout.select(name, allow_empty=True)[b]
            assert torch.equal(got, base.select(name, allow_empty=True)[b] + shift), name
