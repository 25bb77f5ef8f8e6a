"""Idefics3 (``Idefics3ForConditionalGeneration``): SigLIP tiles, pixel shuffle, Llama.

No BOI/EOI: per tile ``<fake_token_around_image> <row_r_col_c> <image> x k`` (the tags are
``image_meta``), tile rows end in ``\\n`` (eol), then the global image
``<fake_token_around_image> <global-img> <image> x k <fake_token_around_image>``; the span runs
from the first to the last ``<fake_token_around_image>``. :func:`idefics3_tokens` and
:func:`idefics3_patches` serve SmolVLM too.

Example:
    >>> tiny = build_tiny("idefics3")   # the global image alone; 2x2 tiles + global image
"""

from __future__ import annotations

from typing import Any

import torch
from transformer_lens.model_bridge.supported_architectures.idefics3 import (
    Idefics3ArchitectureAdapter,
)

from hooked_vlm.adapters.vision import with_editable_tower
from hooked_vlm.families._tiny import TEXT_VOCAB, TinyModel, eager, finish, llama, rows, seeded, tag
from hooked_vlm.families.base import Architecture, decoder_tokens, fixed, roles
from hooked_vlm.layout import SpecialTokens
from hooked_vlm.layout.patch_grid import PatchRule, TiledPatches

Idefics3Adapter = with_editable_tower(Idefics3ArchitectureAdapter)


def idefics3_tokens(config: Any) -> SpecialTokens:
    """``<image>`` runs with in-span tile tags; ``\\n`` between tile rows as row breaks."""
    return decoder_tokens(config, row_break=())


def idefics3_patches(config: Any) -> PatchRule:
    vision = config.vision_config
    side = vision.image_size // vision.patch_size // config.scale_factor
    return TiledPatches(side, overview="global", rows_from_eol=True)


def tile_tags(n_rows: int = 2, n_cols: int = 2, first: int = 7) -> dict[tuple[int, int], int]:
    """Ids of the ``<row_r_col_c>`` tags of a tiny vocabulary, from ``first`` on."""
    return {(r, c): first + n_cols * r + c for r in range(n_rows) for c in range(n_cols)}


def tiled_block(ids: dict[str, Any], per_tile: int, tiles: tuple[int, int]) -> list[int]:
    """One image's tokens: the ``tiles`` crops (none for (1, 1)), then the global image."""
    img, fake = [ids["image_id"]] * per_tile, ids["fake_id"]
    glob = [fake, ids["global_id"], *img, fake]
    if tiles == (1, 1):
        return glob
    split = []
    for r in range(tiles[0]):
        for c in range(tiles[1]):
            split += [fake, ids["tile_ids"][(r, c)], *img]
        split.append(ids["newline_id"])
    return [*split, ids["newline_id"], *glob]


def tiny_idefics3(seed: int = 0, n_layers: int = 2) -> TinyModel:
    """Idefics3ForConditionalGeneration: 16 px tiles, 4 px patches, pixel shuffle 2 -> 4 tokens.

    Image 0 is the global image only; image 1 is split 2x2 plus the global image. A tile is
    ``<fake_token_around_image> <row_r_col_c> <image> x 4``, each tile row ends in ``\\n``, then
    ``\\n <fake_token_around_image> <global-img> <image> x 4 <fake_token_around_image>``.
    ``pixel_values`` is ``(batch, max tiles, 3, 16, 16)``; all-zero tiles are padding.
    """
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration
    from transformers.models.idefics3.configuration_idefics3 import Idefics3VisionConfig

    torch.manual_seed(seed)
    ids = {"image_id": 3, "fake_id": 4, "global_id": 5, "newline_id": 6, "tile_ids": tile_tags()}
    first_word = 11
    per_tile = 4
    vision = Idefics3VisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        image_size=16, patch_size=4,
    )
    config = Idefics3Config(
        vision_config=vision, text_config=llama(first_word + TEXT_VOCAB, n_layers),
        image_token_id=ids["image_id"], scale_factor=2,
    )
    inner = [ids["fake_id"], ids["global_id"], *ids["tile_ids"].values()]
    tag(config, image_inner_token_ids=inner, row_break_token_id=ids["newline_id"])
    model = finish(Idefics3ForConditionalGeneration(eager(config)), seed)
    blocks = [tiled_block(ids, per_tile, (1, 1)), tiled_block(ids, per_tile, (2, 2))]
    gen = seeded(seed + 1)
    inputs, spans = rows(blocks, first_word, gen)
    pixels = torch.zeros(2, 5, 3, 16, 16)
    pixels[0, :1] = torch.randn(1, 3, 16, 16, generator=gen)
    pixels[1] = torch.randn(5, 3, 16, 16, generator=gen)
    inputs["pixel_values"] = pixels
    inputs["pixel_attention_mask"] = torch.ones(2, 5, 16, 16, dtype=torch.bool)
    extras = {**ids, "tiles": [(1, 1), (2, 2)], "tokens_per_tile": per_tile,
              "image_spans": spans, "forward_keys": ["pixel_attention_mask"]}
    return TinyModel("idefics3", model, inputs, per_tile, extras)


NOTES = (
    "No BOI/EOI: per tile <fake_token_around_image> <row_r_col_c> <image> x k (tags: "
    "image_meta), tile rows end in \\n (eol), then the global image <fake_token_around_image> "
    "<global-img> <image> x k <fake_token_around_image>; the span runs from the first to the "
    "last <fake_token_around_image>. Adjacent images with no text between them form one span."
)

FAMILY = Architecture(
    "Idefics3ForConditionalGeneration",
    native=False,
    family="Idefics3",
    special_tokens=idefics3_tokens,
    patch_rule=idefics3_patches,
    tl_adapter=fixed("hooked_vlm.Idefics3"),
    notes=NOTES,
    gate="`last_image` (no EOI: the closing `<fake_token_around_image>` of the global image)",
    nested_images=True,
    roles=roles("row_break"),
    adapters={"hooked_vlm.Idefics3": Idefics3Adapter},
    tiny={"idefics3": tiny_idefics3},
)
