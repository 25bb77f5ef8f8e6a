"""LLaVA-NeXT (``LlavaNextForConditionalGeneration``): anyres tiles of a CLIP tower.

No BOI/EOI: ``<image>`` features of the base image, then the unpadded high-res grid row by
row, each row closed by the learned ``image_newline`` (itself an ``<image>`` placeholder, so
the rows come from ``image_sizes``). :func:`anyres_grid` is shared with LLaVA-OneVision.

Example:
    >>> tiny = build_tiny("llava_next")   # 12x24 (1x2 tiles) and 24x24 (2x2) images
"""

from __future__ import annotations

import math
from typing import Any

import torch
from transformer_lens.model_bridge.supported_architectures.llava_next import (
    LlavaNextArchitectureAdapter,
)

from hooked_vlm.adapters.vision import with_editable_tower
from hooked_vlm.families._tiny import TEXT_VOCAB, TinyModel, eager, finish, llama, rows, seeded
from hooked_vlm.families.base import Architecture, fixed, grid_placeholders, llava_tokens, needs
from hooked_vlm.layout import ImageGrid
from hooked_vlm.layout.patch_grid import AnyresPatches, PatchRule

LlavaNextAdapter = with_editable_tower(LlavaNextArchitectureAdapter)


def anyres_grid(config: Any, extras: dict[str, Any]) -> list[ImageGrid]:
    """LLaVA-NeXT / OneVision: base-image features, then the unpadded high-res grid row by
    row, each row closed by the learned ``image_newline`` (an ``<image>`` placeholder too).

    Mirrors HF's ``pack_image_features``: anyres tile grid, ``unpad_image``, OneVision's
    ``anyres_max_N`` down-scaling; images of multi-image prompts (``batch_num_images`` > 1,
    OneVision) are one tile plus one newline.
    """
    from transformers.models.llava_next.modeling_llava_next import (
        get_anyres_image_grid_shape,
        unpad_image,
    )

    why = "one (height, width) per image, to find the image_newline closing each row"
    sizes = needs(extras, "image_sizes", config.model_type, why).tolist()
    tile = config.vision_config.image_size
    side = tile // config.vision_config.patch_size
    counts = extras.get("batch_num_images")
    tiled = [n == 1 for n in counts.tolist() for _ in range(n)] if counts is not None else None
    max_tiles = getattr(config, "vision_aspect_ratio", None)
    grids = []
    for i, size in enumerate(sizes):
        if tiled is not None and not tiled[i]:
            grids.append(ImageGrid(side * side + 1, (side * side,)))
            continue
        tiles_h, tiles_w = get_anyres_image_grid_shape(size, config.image_grid_pinpoints, tile)
        n_rows, cols = unpad_image(torch.empty(0, tiles_h * side, tiles_w * side), size).shape[1:]
        if max_tiles is not None:
            ratio = math.sqrt(
                n_rows * cols / (int(max_tiles.removeprefix("anyres_max_")) * side**2)
            )
            if ratio > 1.1:
                n_rows, cols = int(n_rows // ratio), int(cols // ratio)
        grids.append(ImageGrid.rows(n_rows, cols, offset=side * side))
    return grids


def anyres_patches(config: Any) -> PatchRule:
    return AnyresPatches(config.vision_config.image_size // config.vision_config.patch_size)


# ------------------------------------------------------------------------- tiny instances

PINPOINTS = [[12, 12], [12, 24], [24, 12], [24, 24]]


def anyres_batch(
    config: Any, sizes: list[tuple[int, int]], image_id: int, first_word: int, seed: int,
    single_newline: bool,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """LLaVA-NeXT/OneVision anyres batch; sizes are chosen so that no unpadding happens.

    Each ``<image>`` run is the base image (``side x side`` features) then the high-res grid,
    row by row, each row ending in the learned ``image_newline`` vector (still an ``<image>``
    token). A single-tile image under OneVision gets one trailing newline instead.
    """
    from transformers.models.llava_next.modeling_llava_next import (
        get_anyres_image_grid_shape,
        image_size_to_num_patches,
    )

    tile = config.vision_config.image_size
    side = tile // config.vision_config.patch_size
    layouts, blocks = [], []
    for h, w in sizes:
        tiles_h, tiles_w = get_anyres_image_grid_shape((h, w), PINPOINTS, tile)
        if (tiles_h, tiles_w) == (1, 1) and single_newline:
            layout = {"base": side * side, "rows": 0, "cols": 0, "newline": True}
            n = side * side + 1
        else:
            layout = {"base": side * side, "rows": tiles_h * side, "cols": tiles_w * side}
            n = side * side + tiles_h * side * (tiles_w * side + 1)
        layouts.append({**layout, "tiles": (tiles_h, tiles_w)})
        blocks.append([image_id] * n)
    gen = seeded(seed + 1)
    inputs, spans = rows(blocks, first_word, gen)
    n_patches = [image_size_to_num_patches((h, w), PINPOINTS, tile) for h, w in sizes]
    inputs["pixel_values"] = torch.randn(len(sizes), max(n_patches), 3, tile, tile, generator=gen)
    inputs["image_sizes"] = torch.tensor(sizes)
    extras = {"image_id": image_id, "layouts": layouts, "image_spans": spans,
              "forward_keys": ["image_sizes"]}
    return inputs, extras


def tiny_llava_next(seed: int = 0, n_layers: int = 2) -> TinyModel:
    """LlavaNextForConditionalGeneration: CLIP tower on 12 px tiles (3x3 features), anyres.

    Images of 12x24 (1x2 tiles: 9 + 3x(6+1) = 30 tokens) and 24x24 (2x2: 9 + 6x(6+1) = 51).
    """
    from transformers import CLIPVisionConfig, LlavaNextConfig, LlavaNextForConditionalGeneration

    torch.manual_seed(seed)
    image_id, first_word = 3, 8
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        image_size=12, patch_size=4, projection_dim=32,
    )
    config = LlavaNextConfig(
        vision_config=vision, text_config=llama(first_word + TEXT_VOCAB, n_layers),
        image_token_index=image_id, image_grid_pinpoints=PINPOINTS,
        vision_feature_layer=-2, vision_feature_select_strategy="default",
    )
    model = finish(LlavaNextForConditionalGeneration(eager(config)), seed)
    inputs, extras = anyres_batch(config, [(12, 24), (24, 24)], image_id, first_word, seed,
                                  single_newline=False)
    return TinyModel("llava_next", model, inputs, 30, extras)


FAMILY = Architecture(
    "LlavaNextForConditionalGeneration",
    native=False,
    family="LLaVA-NeXT",
    special_tokens=llava_tokens,
    patch_rule=anyres_patches,
    grid_from_inputs=anyres_grid,
    tl_adapter=fixed("hooked_vlm.LlavaNext"),
    notes="No BOI/EOI: <image> features of the base image, then the unpadded high-res "
    "grid row by row, each row closed by the learned image_newline (eol).",
    gate="`last_image` (no EOI: the last `image_newline` of the high-res grid)",
    placeholders_per_image=grid_placeholders(anyres_grid),
    adapters={"hooked_vlm.LlavaNext": LlavaNextAdapter},
    tiny={"llava_next": tiny_llava_next},
)
