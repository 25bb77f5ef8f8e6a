"""Mistral3 (``Mistral3ForConditionalGeneration``, Mistral-Small-3.1): a Pixtral tower, a 2x2
patch merger and a Mistral decoder.

Layout as Pixtral (:mod:`hooked_vlm.families._pixtral`): rows of ``[IMG]``, ``[IMG_BREAK]``
between rows (eol), ``[IMG_END]`` (EOI), no BOI.

Example:
    >>> tiny = build_tiny("mistral3")   # 16x24 and 24x16 px -> 2x3 and 3x2 [IMG] grids
"""

from __future__ import annotations

import torch

from hooked_vlm.families import _pixtral
from hooked_vlm.families._tiny import LLAMA, TEXT_VOCAB, TinyModel, eager, finish, tag
from hooked_vlm.families.base import Architecture, fixed, llava_tokens, roles
from hooked_vlm.layout.patch_grid import RowPatches


def tiny_mistral3(seed: int = 0, n_layers: int = 2) -> TinyModel:
    """Mistral3ForConditionalGeneration: Pixtral tower, 2x2 patch merger, Mistral decoder.

    Images of 16x24 and 24x16 px (4 px patches, merged 2x2) -> 2x3 and 3x2 ``[IMG]`` grids.
    """
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration, MistralConfig

    torch.manual_seed(seed)
    ids = {"image_id": 3, "row_break_id": 4, "eoi_id": 5}
    first_word = 8
    text = MistralConfig(**{**LLAMA, "vocab_size": first_word + TEXT_VOCAB,
                            "num_hidden_layers": n_layers, "head_dim": 8, "sliding_window": None})
    config = Mistral3Config(
        vision_config=_pixtral.pixtral_vision(4), text_config=text,
        image_token_index=ids["image_id"], spatial_merge_size=2, vision_feature_layer=-1,
    )
    tag(config, image_break_token_id=ids["row_break_id"], image_end_token_id=ids["eoi_id"])
    model = finish(Mistral3ForConditionalGeneration(eager(config)), seed)
    inputs, extras = _pixtral.pixtral_batch([(16, 24), (24, 16)], 8, ids, first_word, seed)
    return TinyModel("mistral3", model, inputs, 6, extras)


FAMILY = Architecture(
    "Mistral3ForConditionalGeneration",
    native=False,
    family="Mistral3",
    special_tokens=llava_tokens,
    patch_rule=lambda _config: RowPatches(),
    tl_adapter=fixed(_pixtral.ADAPTER_KEY),
    notes="Pixtral layout after a 2x2 patch merger: rows of [IMG], [IMG_BREAK] between "
    "rows (eol), [IMG_END] (EOI); no BOI.",
    gate="`eoi` (`[IMG_END]`)",
    placeholders_per_image=_pixtral.pixtral_placeholders,
    roles=roles("row_break", "eoi"),
    adapters={_pixtral.ADAPTER_KEY: _pixtral.PixtralAdapter},
    tiny={"mistral3": tiny_mistral3},
)
