"""SmolVLM (``SmolVLMForConditionalGeneration``): Idefics3's layout and modules, its own class.

The vision tower (``model.vision_model``, SigLIP-shaped), the pixel-shuffle connector and the
Llama-shaped decoder (``model.text_model``) sit where Idefics3 puts them, so the TL adapter is
Idefics3's (TransformerLens' own, tower attention editable) and the layout rules are Idefics3's
(:mod:`.idefics3`): per tile ``<fake_token_around_image> <row_r_col_c> <image> x k``, ``\\n``
after each tile row, then the global image ``<fake_token_around_image> <global-img>
<image> x k <fake_token_around_image>``; no BOI/EOI.

Video: SmolVLM's processor turns a video into frames that are images to the model (one
``<fake_token_around_image> <global-img> <image> x k <fake_token_around_image>`` each, after a
``Frame from MM:SS:`` caption). The ids cannot tell frames from images, so a layout marks
them when told: ``model.layout(**inputs, video_frames=[n_0, n_1, ...])`` makes the last
``n_b`` image spans of example ``b`` frames 0..n_b-1 of its video.

Example:
    >>> tiny = build_tiny("smolvlm")
    >>> video = build_tiny("smolvlm_video")    # 3 frames per example
    >>> layout = model.layout(**video.inputs, video_frames=[3, 3])
    >>> layout.select("last_image", frame=2)   # the last token of each example's third frame
"""

from __future__ import annotations

from typing import Any

import torch

from hooked_vlm.families._tiny import (
    TEXT_VOCAB,
    TinyModel,
    eager,
    fill_zeros,
    llama,
    rows,
    seeded,
    tag,
)
from hooked_vlm.families.base import Architecture, fixed, roles
from hooked_vlm.families.idefics3 import (
    NOTES,
    Idefics3Adapter,
    idefics3_patches,
    idefics3_tokens,
    tile_tags,
    tiled_block,
)

IDS = {"image_id": 3, "fake_id": 4, "global_id": 5, "newline_id": 6, "tile_ids": tile_tags()}
FIRST_WORD = 11


def _model(seed: int, n_layers: int) -> Any:
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration
    from transformers.models.smolvlm.configuration_smolvlm import SmolVLMVisionConfig

    torch.manual_seed(seed)
    vision = SmolVLMVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        image_size=16, patch_size=4,
    )
    config = SmolVLMConfig(
        vision_config=vision, text_config=llama(FIRST_WORD + TEXT_VOCAB, n_layers),
        image_token_id=IDS["image_id"], scale_factor=2,
    )
    inner = [IDS["fake_id"], IDS["global_id"], *IDS["tile_ids"].values()]
    tag(config, image_inner_token_ids=inner, row_break_token_id=IDS["newline_id"])
    return fill_zeros(SmolVLMForConditionalGeneration(eager(config)), seed)


def tiny_smolvlm(seed: int = 0, n_layers: int = 2) -> TinyModel:
    """SmolVLMForConditionalGeneration: 16 px tiles, 4 px patches, pixel shuffle 2 -> 4 tokens
    per tile. Image 0 is split 1x2 plus the global image; image 1 is the global image only.
    """
    model = _model(seed, n_layers)
    per_tile, tiles = 4, [(1, 2), (1, 1)]
    blocks = [tiled_block(IDS, per_tile, t) for t in tiles]
    gen = seeded(seed + 1)
    inputs, spans = rows(blocks, FIRST_WORD, gen)
    pixels = torch.zeros(2, 3, 3, 16, 16)
    pixels[0] = torch.randn(3, 3, 16, 16, generator=gen)
    pixels[1, :1] = torch.randn(1, 3, 16, 16, generator=gen)
    inputs["pixel_values"] = pixels
    inputs["pixel_attention_mask"] = torch.ones(2, 3, 16, 16, dtype=torch.bool)
    extras = {**IDS, "tiles": tiles, "tokens_per_tile": per_tile, "image_spans": spans,
              "forward_keys": ["pixel_attention_mask"]}
    return TinyModel("smolvlm", model, inputs, per_tile, extras)


def tiny_smolvlm_video(seed: int = 0, n_layers: int = 2, n_frames: int = 3) -> TinyModel:
    """The tiny SmolVLM with a video of ``n_frames`` frames per example, each frame a global
    image after two caption words (``Frame from MM:SS:`` in the real processor).

    ``extras["video_frames"]`` is the layout argument that marks them as frames.
    """
    model = _model(seed, n_layers)
    per_tile = 4
    frame = tiled_block(IDS, per_tile, (1, 1))
    gen = seeded(seed + 1)
    prompts, spans = [], []
    for _ in range(2):
        ids_, example_spans = [1, *[FIRST_WORD + w for w in range(3)]], []
        for _k in range(n_frames):
            ids_ += [FIRST_WORD + 3, FIRST_WORD + 4]  # the frame's caption
            example_spans.append((len(ids_), len(ids_) + len(frame)))
            ids_ += frame
        prompts.append(ids_ + [FIRST_WORD + 5 + w for w in range(4)])
        spans.append(example_spans)
    ids = torch.tensor(prompts)
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": torch.randn(2, n_frames, 3, 16, 16, generator=gen),
        "pixel_attention_mask": torch.ones(2, n_frames, 16, 16, dtype=torch.bool),
    }
    extras = {**IDS, "frame_spans": spans, "video_frames": [n_frames, n_frames],
              "tokens_per_tile": per_tile, "forward_keys": ["pixel_attention_mask"]}
    return TinyModel("smolvlm_video", model, inputs, per_tile, extras)


FAMILY = Architecture(
    "SmolVLMForConditionalGeneration",
    native=False,
    family="SmolVLM",
    special_tokens=idefics3_tokens,
    patch_rule=idefics3_patches,
    tl_adapter=fixed("hooked_vlm.Idefics3"),
    notes=NOTES + " Video frames are images after a 'Frame from MM:SS:' caption "
    "(layout(..., video_frames=[n per example]) marks them).",
    gate="`last_image` (no EOI: the closing `<fake_token_around_image>` of the global "
    "image; of the last frame for a video)",
    nested_images=True,
    roles=roles("row_break"),
    adapters={"hooked_vlm.Idefics3": Idefics3Adapter},
    tiny={"smolvlm": tiny_smolvlm, "smolvlm_video": tiny_smolvlm_video},
)
