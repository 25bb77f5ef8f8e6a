"""Emu3 (``Emu3ForConditionalGeneration``): a native model, images as rows of VQ codes.

Layout: ``<|image start|>`` (BOI) + a size header ``{h}*{w}<|image token|>`` (image_meta) +
rows of codes each closed by ``<|extra_200|>`` (EOL) + ``<|extra_201|>`` (EOF) +
``<|image end|>`` (EOI). The EOL tokens are image placeholders too, so the rows come from
``image_sizes``. TransformerLens ships the adapter (its VQ side is unmapped: no vision hooks).

Example:
    >>> tiny = build_tiny("emu3")   # 16 px images -> 4 rows of 4 codes + EOL
"""

from __future__ import annotations

from typing import Any

import torch

from hooked_vlm.families._tiny import TEXT_VOCAB, TinyModel, finish, seeded, words
from hooked_vlm.families.base import Architecture, grid_placeholders, needs, roles, text_config
from hooked_vlm.families.chameleon import vocab_id
from hooked_vlm.layout import ImageGrid, SpecialTokens
from hooked_vlm.layout.patch_grid import RowPatches


def _tokens(config: Any) -> SpecialTokens:
    text = text_config(config)
    return SpecialTokens(
        image=vocab_id(config, "<image>"),
        bos=text.bos_token_id,
        boi=vocab_id(config, "<|image start|>"),
        eoi=vocab_id(config, "<|image end|>"),
        eof=vocab_id(config, "<|extra_201|>"),
        pad=text.pad_token_id,
    )


def _grid(config: Any, extras: dict[str, Any]) -> list[ImageGrid]:
    why = "one (height, width) per image, to find the end-of-line token closing each row"
    sizes = needs(extras, "image_sizes", "Emu3", why)
    factor = 2 ** (len(config.vq_config.channel_multiplier) - 1)
    return [ImageGrid.rows(int(h) // factor, int(w) // factor) for h, w in sizes.tolist()]


def emu3_vocabulary(n_codes: int) -> dict[str, int]:
    """An Emu3 vocabulary map: specials, ``<|visual token NNNNNN|>`` codes, digits, words."""
    names = ["<pad>", "<s>", "</s>", "<|image start|>", "<|image end|>", "<|image token|>",
             "<|extra_200|>", "<|extra_201|>", "<image>", "*"]
    names += [f"<|visual token {c:06d}|>" for c in range(n_codes)]
    names += [str(d) for d in range(10)]
    names += [f"w{word}" for word in range(TEXT_VOCAB)]
    return {name: i for i, name in enumerate(names)}


def tiny_emu3(seed: int = 0, n_layers: int = 2) -> TinyModel:
    """Emu3ForConditionalGeneration: 16 px images -> 4x4 codes, rows end in EOL (``<|extra_200|>``).

    The sequence is ``<|image start|> 4 * 4 <|image token|>`` + 4 rows of (4 codes + EOL) as
    ``<image>`` placeholders + ``<|extra_201|>`` (EOF) + ``<|image end|>`` (EOI).
    """
    from transformers import Emu3Config, Emu3ForConditionalGeneration
    from transformers.models.emu3.configuration_emu3 import Emu3TextConfig, Emu3VQVAEConfig

    torch.manual_seed(seed)
    n_codes = 16
    vocab = emu3_vocabulary(n_codes)
    vq = Emu3VQVAEConfig(
        codebook_size=n_codes, embed_dim=8, latent_channels=8, base_channels=32,
        channel_multiplier=[1, 1, 1], num_res_blocks=1, attn_resolutions=[],
        temporal_downsample_factor=2, hidden_size=32, num_attention_heads=1,
    )
    text = Emu3TextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=n_layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, attention_dropout=0.0,
    )
    config = Emu3Config(vq_config=vq.to_dict(), text_config=text.to_dict(), vocabulary_map=vocab)
    config._attn_implementation = "eager"
    config.text_config._attn_implementation = "eager"
    model = finish(Emu3ForConditionalGeneration(config), seed)
    side = 16
    factor = 2 ** (len(vq.channel_multiplier) - 1)
    n_rows, cols = side // factor, side // factor
    n_img = n_rows * (cols + 1)
    v, first_word = vocab, vocab["w0"]
    header = [v["<|image start|>"], v[str(n_rows)], v["*"], v[str(cols)], v["<|image token|>"]]
    image = [*header, *[v["<image>"]] * n_img, v["<|extra_201|>"], v["<|image end|>"]]
    gen = seeded(seed + 1)
    seqs = [[1, *words(3, first_word, gen), *image, *words(5, first_word, gen)] for _ in range(2)]
    inputs = {
        "input_ids": torch.tensor(seqs),
        "attention_mask": torch.ones(2, len(seqs[0]), dtype=torch.long),
        "pixel_values": torch.randn(2, 3, side, side, generator=gen),
        "image_sizes": torch.tensor([[side, side], [side, side]]),
    }
    return TinyModel("emu3", model, inputs, n_img, extras={"grid": (n_rows, cols)})


FAMILY = Architecture(
    "Emu3ForConditionalGeneration",
    native=True,
    family="Emu3",
    special_tokens=_tokens,
    patch_rule=lambda _config: RowPatches(),
    vision_hooks="",
    grid_from_inputs=_grid,
    notes="<|image start|>{h}*{w}<|image token|> + rows of codes ending in "
    "<|extra_200|> (EOL) + <|extra_201|> (EOF) + <|image end|> (EOI).",
    gate="`eoi` (`<|image end|>`)",
    placeholders_per_image=grid_placeholders(_grid),
    roles=roles("boi", "eoi", "eof"),
    tiny={"emu3": tiny_emu3},
)
