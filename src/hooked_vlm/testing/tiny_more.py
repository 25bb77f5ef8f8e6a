"""More tiny random VLMs: the encoder-based ("non-native") families of issue 4.

Same contract as :mod:`hooked_vlm.testing.tiny`: each builder returns a :class:`TinyModel` with an
fp32 eager HF model in eval mode and a batch of two sequences holding two *different* images
(different sizes or tile counts wherever the architecture allows). When the two images give
different token counts, the trailing text is lengthened so both rows have the same length and no
padding is needed.

``extras`` records the image-token layout of each row: the special ids (``image_id``, and where the
family has them ``boi_id``/``eoi_id``/``row_break_id``/...), ``image_spans`` (``(start, stop)`` of
each image block in each row, BOI/EOI included) and per-image grids. ``forward_keys`` names the
entries of ``inputs`` besides ``input_ids``/``attention_mask``/``pixel_values`` that the forward
needs.

Example:
    >>> tiny = MORE_BUILDERS["qwen2_vl"]()
    >>> logits = tiny.model(**tiny.inputs).logits
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import LlamaConfig, PretrainedConfig

from hooked_vlm.testing._tiny_base import TEXT_VOCAB, TinyModel, _finish, _seeded, _text

_LLAMA = {
    "hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
    "num_key_value_heads": 2, "max_position_embeddings": 256,
    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
}


def _llama(vocab: int, n_layers: int, **overrides: Any) -> LlamaConfig:
    return LlamaConfig(**{**_LLAMA, "vocab_size": vocab, "num_hidden_layers": n_layers,
                          **overrides})


def _eager(config: PretrainedConfig) -> PretrainedConfig:
    """Ask for eager attention on the config and every sub-config."""
    config._attn_implementation = "eager"
    for key in ("text_config", "vision_config"):
        sub = getattr(config, key, None)
        if sub is not None:
            sub._attn_implementation = "eager"
    return config


def _tag(config: PretrainedConfig, **ids: Any) -> PretrainedConfig:
    """Record special ids the HF config has no field for (``boi_token_id``, ...), as loading
    does from the tokenizer for real checkpoints (:func:`hooked_vlm.loading.attach_token_ids`)."""
    for name, value in ids.items():
        setattr(config, name, value)
    return config


def _rows(
    blocks: list[list[int]], first_word: int, gen: torch.Generator
) -> tuple[dict[str, torch.Tensor], list[tuple[int, int]]]:
    """``BOS + 3 words + image block + words``, the tail lengthened so the rows align.

    Returns ``input_ids``/``attention_mask`` and the ``(start, stop)`` span of each block.
    """
    longest = max(len(b) for b in blocks)
    rows, spans = [], []
    for block in blocks:
        head = [1, *_text(3, first_word, gen)]
        spans.append((len(head), len(head) + len(block)))
        rows.append([*head, *block, *_text(5 + longest - len(block), first_word, gen)])
    ids = torch.tensor(rows)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, spans


def _pixtral_rows(grid: tuple[int, int], img: int, brk: int, end: int) -> list[int]:
    """Pixtral layout: each row of ``[IMG]`` ends in ``[IMG_BREAK]``, the last in ``[IMG_END]``."""
    n_rows, n_cols = grid
    out: list[int] = []
    for r in range(n_rows):
        out += [img] * n_cols + [end if r == n_rows - 1 else brk]
    return out


def _pixtral_vision(patch: int) -> Any:
    from transformers import PixtralVisionConfig

    return PixtralVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=patch, head_dim=8,
    )


def _pixtral_batch(
    sizes: list[tuple[int, int]], cell: int, ids: dict[str, int], first_word: int, seed: int
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Pixtral-style batch: images padded to the largest, ``image_sizes`` gives the real size.

    ``cell`` is the pixels per ``[IMG]`` token (patch size times the spatial merge).
    """
    grids = [(h // cell, w // cell) for h, w in sizes]
    blocks = [_pixtral_rows(g, ids["image_id"], ids["row_break_id"], ids["eoi_id"])
              for g in grids]
    gen = _seeded(seed + 1)
    inputs, spans = _rows(blocks, first_word, gen)
    side_h, side_w = max(h for h, _ in sizes), max(w for _, w in sizes)
    pixels = torch.zeros(len(sizes), 3, side_h, side_w)
    for i, (h, w) in enumerate(sizes):
        pixels[i, :, :h, :w] = torch.randn(3, h, w, generator=gen)
    inputs["pixel_values"] = pixels
    inputs["image_sizes"] = torch.tensor(sizes)
    extras = {**ids, "grids": grids, "image_spans": spans, "forward_keys": ["image_sizes"]}
    return inputs, extras


def tiny_pixtral(seed: int = 0, n_layers: int = 2) -> TinyModel:
    """LlavaForConditionalGeneration with a Pixtral tower (pixtral-12b layout), 4 px patches.

    Images of 12x16 and 16x12 px -> 3x4 and 4x3 ``[IMG]`` grids; ``image_sizes`` is required.
    """
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(seed)
    ids = {"image_id": 3, "row_break_id": 4, "eoi_id": 5}
    first_word = 8
    config = LlavaConfig(
        vision_config=_pixtral_vision(4),
        text_config=_llama(first_word + TEXT_VOCAB, n_layers),
        image_token_index=ids["image_id"], vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )
    _tag(config, image_break_token_id=ids["row_break_id"], image_end_token_id=ids["eoi_id"])
    model = _finish(LlavaForConditionalGeneration(_eager(config)), seed)
    inputs, extras = _pixtral_batch([(12, 16), (16, 12)], 4, ids, first_word, seed)
    return TinyModel("pixtral", model, inputs, 12, extras)


def tiny_mistral3(seed: int = 0, n_layers: int = 2) -> TinyModel:
    """Mistral3ForConditionalGeneration: Pixtral tower, 2x2 patch merger, Mistral decoder.

    Images of 16x24 and 24x16 px (4 px patches, merged 2x2) -> 2x3 and 3x2 ``[IMG]`` grids.
    """
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration, MistralConfig

    torch.manual_seed(seed)
    ids = {"image_id": 3, "row_break_id": 4, "eoi_id": 5}
    first_word = 8
    text = MistralConfig(**{**_LLAMA, "vocab_size": first_word + TEXT_VOCAB,
                            "num_hidden_layers": n_layers, "head_dim": 8, "sliding_window": None})
    config = Mistral3Config(
        vision_config=_pixtral_vision(4), text_config=text, image_token_index=ids["image_id"],
        spatial_merge_size=2, vision_feature_layer=-1,
    )
    _tag(config, image_break_token_id=ids["row_break_id"], image_end_token_id=ids["eoi_id"])
    model = _finish(Mistral3ForConditionalGeneration(_eager(config)), seed)
    inputs, extras = _pixtral_batch([(16, 24), (24, 16)], 8, ids, first_word, seed)
    return TinyModel("mistral3", model, inputs, 6, extras)


_PINPOINTS = [[12, 12], [12, 24], [24, 12], [24, 24]]


def _anyres_batch(
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
        tiles_h, tiles_w = get_anyres_image_grid_shape((h, w), _PINPOINTS, tile)
        if (tiles_h, tiles_w) == (1, 1) and single_newline:
            layout = {"base": side * side, "rows": 0, "cols": 0, "newline": True}
            n = side * side + 1
        else:
            layout = {"base": side * side, "rows": tiles_h * side, "cols": tiles_w * side}
            n = side * side + tiles_h * side * (tiles_w * side + 1)
        layouts.append({**layout, "tiles": (tiles_h, tiles_w)})
        blocks.append([image_id] * n)
    gen = _seeded(seed + 1)
    inputs, spans = _rows(blocks, first_word, gen)
    n_patches = [image_size_to_num_patches((h, w), _PINPOINTS, tile) for h, w in sizes]
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
        vision_config=vision, text_config=_llama(first_word + TEXT_VOCAB, n_layers),
        image_token_index=image_id, image_grid_pinpoints=_PINPOINTS,
        vision_feature_layer=-2, vision_feature_select_strategy="default",
    )
    model = _finish(LlavaNextForConditionalGeneration(_eager(config)), seed)
    inputs, extras = _anyres_batch(config, [(12, 24), (24, 24)], image_id, first_word, seed,
                                   single_newline=False)
    return TinyModel("llava_next", model, inputs, 30, extras)


def tiny_llava_onevision(seed: int = 0, n_layers: int = 2) -> TinyModel:
    """LlavaOnevisionForConditionalGeneration: SigLIP tower on 12 px tiles, Qwen2 decoder.

    Images of 24x12 (2x1 tiles: 9 + 6x(3+1) = 33 tokens) and 24x24 (2x2: 9 + 6x(6+1) = 51).
    """
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        Qwen2Config,
        SiglipVisionConfig,
    )

    torch.manual_seed(seed)
    image_id, first_word = 3, 8
    vision = SiglipVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        image_size=12, patch_size=4,
    )
    text = Qwen2Config(**{**_LLAMA, "vocab_size": first_word + TEXT_VOCAB,
                          "num_hidden_layers": n_layers})
    config = LlavaOnevisionConfig(
        vision_config=vision, text_config=text, image_token_index=image_id,
        image_grid_pinpoints=_PINPOINTS, vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )
    model = _finish(LlavaOnevisionForConditionalGeneration(_eager(config)), seed)
    inputs, extras = _anyres_batch(config, [(24, 12), (24, 24)], image_id, first_word, seed,
                                   single_newline=True)
    return TinyModel("llava_onevision", model, inputs, 33, extras)


def tiny_janus(seed: int = 0, n_layers: int = 2) -> TinyModel:
    """JanusForConditionalGeneration, understanding path: 16 px images -> 4x4 = 16 features.

    Layout ``<begin_of_image>`` + 16 ``<image_placeholder>`` + ``<end_of_image>``. The aligner
    maps the vision width to ``projection_dim``, which must equal the text hidden size.
    """
    from transformers import JanusConfig, JanusForConditionalGeneration
    from transformers.models.janus.configuration_janus import JanusVisionConfig, JanusVQVAEConfig

    torch.manual_seed(seed)
    ids = {"image_id": 3, "boi_id": 4, "eoi_id": 5}
    first_word = 8
    n_img = 16
    vision = JanusVisionConfig(
        hidden_size=24, num_hidden_layers=2, num_attention_heads=4, image_size=16, patch_size=4,
        mlp_ratio=1.5, projection_dim=32, depth=2, num_image_tokens=n_img,
    )
    vq = JanusVQVAEConfig(
        embed_dim=8, num_embeddings=16, latent_channels=32, base_channels=32,
        channel_multiplier=[1, 1], num_res_blocks=1, num_patches=2, projection_dim=32,
        image_token_embed_dim=32, num_hidden_layers=1,
    )
    config = JanusConfig(
        text_config=_llama(first_word + TEXT_VOCAB, n_layers).to_dict(),
        vision_config=vision.to_dict(), vq_config=vq.to_dict(), image_token_id=ids["image_id"],
    )
    _tag(config, boi_token_id=ids["boi_id"], eoi_token_id=ids["eoi_id"])
    model = _finish(JanusForConditionalGeneration(_eager(config)), seed)
    block = [ids["boi_id"], *[ids["image_id"]] * n_img, ids["eoi_id"]]
    gen = _seeded(seed + 1)
    inputs, spans = _rows([block, block], first_word, gen)
    inputs["pixel_values"] = torch.randn(2, 3, 16, 16, generator=gen)
    extras = {**ids, "grids": [(4, 4), (4, 4)], "image_spans": spans, "forward_keys": []}
    return TinyModel("janus", model, inputs, n_img, extras)


def tiny_qwen2_vl(seed: int = 0, n_layers: int = 2) -> TinyModel:
    """Qwen2VLForConditionalGeneration: 4 px patches, 2x2 merge, M-RoPE; d_head 16.

    Images of 16x16 and 16x24 px -> patch grids (t, h, w) = (1, 4, 4) and (1, 4, 6) -> 2x2 and
    2x3 merged tokens. Layout ``<|vision_start|>`` + ``<|image_pad|>`` x n + ``<|vision_end|>``;
    ``mm_token_type_ids`` is 1 on ``<|image_pad|>`` only. ``pixel_values`` are flattened patches
    ``(sum t*h*w, 3 * 2 * 4 * 4)``.
    """
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    torch.manual_seed(seed)
    ids = {"image_id": 3, "boi_id": 4, "eoi_id": 5, "video_id": 6}
    first_word = 8
    patch, temporal, merge = 4, 2, 2
    text = {
        **_LLAMA, "hidden_size": 64, "intermediate_size": 67, "vocab_size": first_word + TEXT_VOCAB,
        "num_hidden_layers": n_layers, "rope_parameters": {
            "rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
    }
    vision = {"depth": 2, "embed_dim": 32, "hidden_size": 64, "num_heads": 4, "mlp_ratio": 2,
              "patch_size": patch, "spatial_merge_size": merge, "temporal_patch_size": temporal}
    config = Qwen2VLConfig(
        text_config=text, vision_config=vision, image_token_id=ids["image_id"],
        video_token_id=ids["video_id"], vision_start_token_id=ids["boi_id"],
        vision_end_token_id=ids["eoi_id"],
    )
    model = _finish(Qwen2VLForConditionalGeneration(_eager(config)), seed)
    grids = [(1, 4, 4), (1, 4, 6)]
    blocks = [[ids["boi_id"], *[ids["image_id"]] * (h * w // merge**2), ids["eoi_id"]]
              for _, h, w in grids]
    gen = _seeded(seed + 1)
    inputs, spans = _rows(blocks, first_word, gen)
    n_patches = sum(t * h * w for t, h, w in grids)
    inputs["pixel_values"] = torch.randn(n_patches, 3 * temporal * patch**2, generator=gen)
    inputs["image_grid_thw"] = torch.tensor(grids)
    inputs["mm_token_type_ids"] = (inputs["input_ids"] == ids["image_id"]).long()
    extras = {**ids, "grids": [(h // merge, w // merge) for _, h, w in grids],
              "image_spans": spans, "forward_keys": ["image_grid_thw", "mm_token_type_ids"]}
    return TinyModel("qwen2_vl", model, inputs, 4, extras)


def tiny_internvl(seed: int = 0, n_layers: int = 2) -> TinyModel:
    """InternVLForConditionalGeneration: 16 px tiles, 4 px patches, pixel shuffle 0.5 -> 4 tokens.

    Image 0 is one tile, image 1 three (two crops + thumbnail): ``<img>`` + 4 x tiles
    ``<IMG_CONTEXT>`` + ``</img>``. ``pixel_values`` stacks all tiles ``(4, 3, 16, 16)``.
    """
    from transformers import InternVLConfig, InternVLForConditionalGeneration, Qwen2Config
    from transformers.models.internvl.configuration_internvl import InternVLVisionConfig

    torch.manual_seed(seed)
    ids = {"image_id": 3, "boi_id": 4, "eoi_id": 5}
    first_word = 8
    per_tile = 4
    vision = InternVLVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        image_size=16, patch_size=4,
    )
    text = Qwen2Config(**{**_LLAMA, "vocab_size": first_word + TEXT_VOCAB,
                          "num_hidden_layers": n_layers})
    config = InternVLConfig(
        vision_config=vision, text_config=text, image_token_id=ids["image_id"],
        image_seq_length=per_tile, downsample_ratio=0.5,
    )
    _tag(config, boi_token_id=ids["boi_id"], eoi_token_id=ids["eoi_id"])
    model = _finish(InternVLForConditionalGeneration(_eager(config)), seed)
    tiles = [1, 3]
    blocks = [[ids["boi_id"], *[ids["image_id"]] * (per_tile * t), ids["eoi_id"]] for t in tiles]
    gen = _seeded(seed + 1)
    inputs, spans = _rows(blocks, first_word, gen)
    inputs["pixel_values"] = torch.randn(sum(tiles), 3, 16, 16, generator=gen)
    extras = {**ids, "tiles": tiles, "tokens_per_tile": per_tile, "image_spans": spans,
              "forward_keys": []}
    return TinyModel("internvl", model, inputs, per_tile, extras)


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
    ids = {"image_id": 3, "fake_id": 4, "global_id": 5, "newline_id": 6,
           "tile_ids": {(r, c): 7 + 2 * r + c for r in range(2) for c in range(2)}}
    first_word = 11
    per_tile = 4
    vision = Idefics3VisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        image_size=16, patch_size=4,
    )
    config = Idefics3Config(
        vision_config=vision, text_config=_llama(first_word + TEXT_VOCAB, n_layers),
        image_token_id=ids["image_id"], scale_factor=2,
    )
    inner = [ids["fake_id"], ids["global_id"], *ids["tile_ids"].values()]
    _tag(config, image_inner_token_ids=inner, row_break_token_id=ids["newline_id"])
    model = _finish(Idefics3ForConditionalGeneration(_eager(config)), seed)
    img, fake = [ids["image_id"]] * per_tile, ids["fake_id"]
    glob = [fake, ids["global_id"], *img, fake]
    split = []
    for r in range(2):
        for c in range(2):
            split += [fake, ids["tile_ids"][(r, c)], *img]
        split.append(ids["newline_id"])
    blocks = [glob, [*split, ids["newline_id"], *glob]]
    gen = _seeded(seed + 1)
    inputs, spans = _rows(blocks, first_word, gen)
    pixels = torch.zeros(2, 5, 3, 16, 16)
    pixels[0, :1] = torch.randn(1, 3, 16, 16, generator=gen)
    pixels[1] = torch.randn(5, 3, 16, 16, generator=gen)
    inputs["pixel_values"] = pixels
    inputs["pixel_attention_mask"] = torch.ones(2, 5, 16, 16, dtype=torch.bool)
    extras = {**ids, "tiles": [(1, 1), (2, 2)], "tokens_per_tile": per_tile,
              "image_spans": spans, "forward_keys": ["pixel_attention_mask"]}
    return TinyModel("idefics3", model, inputs, per_tile, extras)


MORE_BUILDERS: dict[str, Callable[..., TinyModel]] = {
    "pixtral": tiny_pixtral,
    "mistral3": tiny_mistral3,
    "llava_next": tiny_llava_next,
    "llava_onevision": tiny_llava_onevision,
    "janus": tiny_janus,
    "qwen2_vl": tiny_qwen2_vl,
    "internvl": tiny_internvl,
    "idefics3": tiny_idefics3,
}
