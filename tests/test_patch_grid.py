"""patch_grid: each family's image patch tokens as a [rows, cols] grid in picture order.

Ground truth comes from outside the code under test: the tiny builders' own construction of
each image block (``extras``), the row-ending tokens in the ids, and the HF vision path itself
(a pixel planted in one cell must change exactly that cell's position).
"""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch
from transformers import (
    ChameleonConfig,
    Idefics3Config,
    InternVLConfig,
    JanusConfig,
    LlavaConfig,
    LlavaNextConfig,
    LlavaOnevisionConfig,
    Qwen2VLConfig,
)

from hooked_vlm import LayoutError
from hooked_vlm.analysis import scatter_to_grid, to_picture, view_box
from hooked_vlm.families import get_architecture
from hooked_vlm.layout import build_layout, patch_grid, patch_grids
from hooked_vlm.layout.patch_grid import AnyresPatches, MergedPatches, SquarePatches, TiledPatches
from tests.conftest import ALL_ARCHS, Wrapped, wrap

INTERNVL_TILES = (1, 2)  # the tiny builder's two crops come from no picture: any 2-tile layout
wrapped = functools.cache(wrap)  # read-only here: one wrapped model per family for the module


@pytest.fixture(scope="module", params=ALL_ARCHS)
def arch(request) -> Wrapped:
    return wrapped(request.param)


def tiles_for(w: Wrapped, b: int) -> tuple[int, int] | None:
    return INTERNVL_TILES if w.tiny.name == "internvl" and b == 1 else None


def grids_of(w: Wrapped, b: int):
    return patch_grids(w.model.layout(**w.inputs), b, tiles=tiles_for(w, b), **w.inputs)


def image_id(w: Wrapped) -> int:
    return w.model.architecture.special_tokens(w.model.hf_model.config).image


def raster(start: int, rows: int, cols: int, stride: int | None = None) -> torch.Tensor:
    """``start + r * stride + c``: rows ``stride`` apart in the sequence."""
    return start + torch.arange(rows)[:, None] * (stride or cols) + torch.arange(cols)


def side_by_side(tiles: list[torch.Tensor], rows: int, cols: int) -> torch.Tensor:
    return torch.cat([torch.cat(tiles[i * cols : (i + 1) * cols], 1) for i in range(rows)], 0)


def expected(w: Wrapped, b: int) -> dict[str, torch.Tensor]:
    """Each view's positions, from how the tiny builder laid out example ``b``'s image."""
    name, x = w.tiny.name, w.tiny.extras
    placeholders = (w.inputs["input_ids"][b] == image_id(w)).nonzero().flatten()
    first = int(placeholders[0])
    if name == "llava" or name.startswith("chameleon"):
        side = math.isqrt(w.tiny.n_image_tokens)
        return {"image": raster(first, side, side)}
    if name in ("emu3", "pixtral", "mistral3"):
        rows, cols = x["grid"] if name == "emu3" else x["grids"][b]
        return {"image": raster(first, rows, cols, cols + 1)}  # one row-end token per row
    if name in ("janus", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "gemma3", "paligemma"):
        return {"image": raster(first, *x["grids"][b])}
    if name == "molmo2":  # the low-res view's tokens, then the high-res grid's
        low_h, low_w, high_h, high_w = x["grids"][b]
        low, high = placeholders.split([low_h * low_w, high_h * high_w])
        return {"high_res": high.view(high_h, high_w), "low_res": low.view(low_h, low_w)}
    if name in ("llava_next", "llava_onevision"):
        info = x["layouts"][b]
        side = math.isqrt(info["base"])
        high = raster(first + info["base"], info["rows"], info["cols"], info["cols"] + 1)
        return {"highres": high, "base": raster(first, side, side)}
    per_tile = x["tokens_per_tile"]  # internvl, idefics3, smolvlm: tiles, the overview last
    side = math.isqrt(per_tile)
    tiles = [t.view(side, side) for t in placeholders.split(per_tile)]
    if len(tiles) == 1:
        return {"image": tiles[0]}
    rows, cols = INTERNVL_TILES if name == "internvl" else x["tiles"][b]
    overview = "thumbnail" if name == "internvl" else "global"
    return {"tiles": side_by_side(tiles[:-1], rows, cols), overview: tiles[-1]}


def test_grids_are_the_builders_image_blocks(arch: Wrapped):
    for b in range(2):
        got, want = grids_of(arch, b), expected(arch, b)
        assert list(got) == list(want)  # the same views, the default first
        for view, positions in want.items():
            assert torch.equal(got[view].positions, positions), (view, got[view].positions)
            assert got[view].view == view and got[view].shape == tuple(positions.shape)


def test_grids_hold_every_patch_once_and_nothing_else(arch: Wrapped):
    layout = arch.model.layout(**arch.inputs)
    for b in range(2):
        span = layout.spans[b][0]
        every = torch.cat([g.positions.flatten() for g in grids_of(arch, b).values()])
        assert every.unique().numel() == every.numel()
        patches = layout.mask("image_patches")[b].nonzero().flatten()
        assert torch.equal(every.sort().values, patches)
        assert (arch.inputs["input_ids"][b, every] == image_id(arch)).all()
        structural = {*span.eol, *span.meta, span.boi, span.eoi, span.eof} - {None}
        assert not structural & set(every.tolist())


def test_sequence_order_is_raster_order_within_each_tile(arch: Wrapped):
    for b in range(2):
        for grid in grids_of(arch, b).values():
            tr, tc = grid.tiles
            rows, cols = grid.shape
            blocks = grid.positions.view(tr, rows // tr, tc, cols // tc).permute(0, 2, 1, 3)
            flat = blocks.reshape(tr * tc, -1)
            assert (flat.diff(dim=1) > 0).all()
            assert (flat[1:, 0] > flat[:-1, -1]).all()  # tiles in row-major order


@pytest.mark.parametrize(
    "name", ["emu3", "pixtral", "mistral3", "llava_next", "llava_onevision", "idefics3"]
)
def test_row_index_from_the_row_end_tokens_is_constant_along_grid_rows(name: str):
    """Where tokens end each row (EOL, [IMG_BREAK], image_newline, Idefics3's tile-row \\n),
    the number of row ends before a position is its row; scattered, it is constant per row."""
    w = wrapped(name)
    layout = w.model.layout(**w.inputs)
    for b in range(2):
        row_of = layout.mask("eol")[b].long().cumsum(0).float()
        grid = patch_grid(layout, b, **w.inputs)
        heat = scatter_to_grid(row_of, grid) - row_of[grid.positions[0, 0]]
        rows, _ = grid.shape
        per_end = rows // grid.tiles[0] if name == "idefics3" else 1  # grid rows per row end
        want = torch.arange(rows) // per_end
        assert torch.equal(heat, want[:, None].float().expand_as(heat))


def test_a_planted_cell_lights_its_part_of_the_picture(arch: Wrapped):
    seq = arch.inputs["input_ids"].shape[1]
    for b in range(2):
        for grid in grids_of(arch, b).values():
            rows, cols = grid.shape
            for r, c in {(0, 0), (rows - 1, cols - 1), (rows // 2, cols // 3)}:
                values = torch.zeros(3, seq)  # e.g. three layers
                values[1, grid.positions[r, c]] = 1.0
                picture = to_picture(scatter_to_grid(values, grid), (rows * 5, cols * 3))
                bright = picture[1].nonzero()
                assert picture[[0, 2]].sum() == 0 and len(bright) == 15
                assert bright[:, 0].unique().tolist() == list(range(r * 5, r * 5 + 5))
                assert bright[:, 1].unique().tolist() == list(range(c * 3, c * 3 + 3))


def test_crop_and_pad_place_the_view_on_the_picture():
    """A 4x4 grid on a 40 x 80 picture: a centre crop sees x in 20..60; padding makes an
    80 x 80 view whose top 20 and bottom 20 rows are off the picture."""
    assert view_box((40, 80), "fill") == (0.0, 0.0, 40.0, 80.0)
    assert view_box((40, 80), "center_crop") == (0.0, 20.0, 40.0, 40.0)
    assert view_box((40, 80), "pad") == (-20.0, 0.0, 80.0, 80.0)
    cell = torch.zeros(4, 4)
    cell[1, 2] = 1.0
    crop = to_picture(cell, (40, 80), "center_crop")
    assert crop[:, :20].isnan().all() and crop[:, 60:].isnan().all()
    assert (crop[:, 20:60] == 0).logical_or(crop[:, 20:60] == 1).all()
    assert (crop == 1).nonzero().amin(0).tolist() == [10, 40]
    assert (crop == 1).nonzero().amax(0).tolist() == [19, 49]
    pad = to_picture(cell, (40, 80), "pad")
    assert not pad.isnan().any()
    assert (pad == 1).nonzero().amin(0).tolist() == [0, 40]  # view rows 20..39
    assert (pad == 1).nonzero().amax(0).tolist() == [19, 59]
    with pytest.raises(ValueError, match="fit="):
        view_box((4, 4), "stretch")


def test_several_images_in_one_sequence_each_get_their_own_grid():
    w = wrapped("qwen2_vl")
    ids = w.inputs["input_ids"]
    (s0, e0), (s1, e1) = w.tiny.extras["image_spans"]
    two = torch.cat([ids[0, :e0], ids[1, s1:e1], ids[0, e0:]])[None]
    thw = w.inputs["image_grid_thw"]
    layout = w.model.layout(two)
    first = patch_grid(layout, 0, 0, image_grid_thw=thw)
    second = patch_grid(layout, 0, 1, image_grid_thw=thw)
    assert first.shape == (2, 2) and second.shape == (2, 3)
    assert torch.equal(second.positions, raster(e0 + 1, 2, 3))


def test_bad_requests_say_what_is_wrong():
    w = wrapped("llava")
    layout = w.model.layout(**w.inputs)
    with pytest.raises(LayoutError, match="has 1 image.*image 1 does not exist"):
        patch_grid(layout, 0, image=1)
    with pytest.raises(LayoutError, match="example 2 does not exist.*2 example"):
        patch_grid(layout, 2)
    with pytest.raises(LayoutError, match="no 'base' view.*'image'"):
        patch_grid(layout, 0, view="base")
    with pytest.raises(LayoutError, match=r"tiles=\(2, 2\) was given"):
        patch_grid(layout, 0, tiles=(2, 2))
    bare = build_layout(w.inputs["input_ids"], layout.tokens)
    with pytest.raises(LayoutError, match="no patch rule.*model.layout"):
        patch_grid(bare, 0)
    with pytest.raises(ValueError, match="whole sequence"):
        scatter_to_grid(torch.zeros(10), patch_grid(layout, 0))


def test_families_that_need_more_inputs_ask_for_them():
    qwen = wrapped("qwen2_vl")
    layout = qwen.model.layout(**qwen.inputs)
    with pytest.raises(LayoutError, match="image_grid_thw"):
        patch_grid(layout, 0)
    internvl = wrapped("internvl")
    layout = internvl.model.layout(**internvl.inputs)
    with pytest.raises(LayoutError, match=r"2 tiles \+ a thumbnail.*tiles=\(rows, cols\)"):
        patch_grid(layout, 1)
    with pytest.raises(LayoutError, match=r"tiles=\(2, 2\) gives 4 tiles"):
        patch_grid(layout, 1, tiles=(2, 2))
    assert patch_grid(layout, 1, tiles=(2, 1)).shape == (4, 2)
    idefics3 = wrapped("idefics3")
    layout = idefics3.model.layout(**idefics3.inputs)
    with pytest.raises(LayoutError, match=r"tiles=\(1, 4\) was given.*\(2, 2\)"):
        patch_grid(layout, 1, tiles=(1, 4))


def test_real_size_configs_give_the_published_grids():
    """Default HF configs (the published sizes, no weights): LLaVA-1.5 24x24 (+ the CLS under
    "full"), Chameleon 32x32, Janus 24x24, InternVL 16x16 per tile, Idefics3-8B 13x13 per
    tile, Qwen2-VL 2x2 merge, LLaVA-NeXT 24x24 / OneVision 27x27 base."""
    def rule(config):
        hf_class = type(config).__name__.removesuffix("Config") + "ForConditionalGeneration"
        return get_architecture(hf_class).patch_rule(config)

    assert rule(LlavaConfig()) == SquarePatches(24)
    assert rule(LlavaConfig(vision_feature_select_strategy="full")) == SquarePatches(24, 1)
    assert rule(ChameleonConfig()) == SquarePatches(32)
    assert rule(JanusConfig()) == SquarePatches(24)
    assert rule(InternVLConfig()) == TiledPatches(16, "thumbnail", rows_from_eol=False)
    idefics3 = Idefics3Config(vision_config={"image_size": 364, "patch_size": 14})
    assert rule(idefics3) == TiledPatches(13, "global", rows_from_eol=True)
    assert rule(Qwen2VLConfig()) == MergedPatches(2)
    assert rule(LlavaNextConfig()) == AnyresPatches(24)
    assert rule(LlavaOnevisionConfig()) == AnyresPatches(27)


def test_the_cls_feature_of_the_full_strategy_is_left_out():
    w = wrapped("llava")
    config = copy.deepcopy(w.model.hf_model.config)
    config.vision_feature_select_strategy = "full"
    rule = w.model.architecture.patch_rule(config)
    ids = w.inputs["input_ids"][:1]
    first = int((ids[0] == 3).nonzero()[0])
    with_cls = torch.cat([ids[:, :first], ids[:, first : first + 1], ids[:, first:]], 1)
    layout = build_layout(with_cls, w.model.layout(ids).tokens, patch_rule=rule)
    assert torch.equal(patch_grid(layout, 0).positions, raster(first + 1, 5, 5))
    with pytest.raises(LayoutError, match=r"1 leading feature\(s\) \+ 5x5 = 26"):
        patch_grid(build_layout(ids, layout.tokens, patch_rule=rule), 0)


def test_a_onevision_image_of_a_multi_image_prompt_is_its_base_grid():
    w = wrapped("llava_onevision")
    ids = w.inputs["input_ids"][0]
    start, _ = w.tiny.extras["image_spans"][0]
    block = torch.full((10,), w.tiny.extras["image_id"])  # 3x3 base + one image_newline
    two = torch.cat([ids[:start], block, ids[-3:], block, ids[-3:]])[None]
    layout = w.model.layout(two, image_sizes=w.inputs["image_sizes"],
                            batch_num_images=torch.tensor([2]))
    for image, first in ((0, start), (1, start + 13)):
        views = patch_grids(layout, 0, image)
        assert list(views) == ["base"]
        assert torch.equal(views["base"].positions, raster(first, 3, 3))
