"""Tiny random VLMs built from config objects, as transformers' own tests do.

They exercise the real HF classes (vision tower or VQ tokenizer, projector, decoder) at a size
that runs in milliseconds on a CPU. Weights are random: the numbers they produce mean nothing,
but every code path (image features scattered into the sequence, padding, KV cache) is the one a
real checkpoint takes.

The encoder-based families of issue 4 live in :mod:`hooked_vlm.testing.tiny_more` and are
merged into :data:`TINY_BUILDERS`. Each builder returns a :class:`TinyModel`: the HF model
(eager attention, fp32, eval mode) and ``inputs``, a batch of two sequences with two
*different* images and different text.

Example:
    >>> tiny = build_tiny("llava")
    >>> logits = tiny.model(**tiny.inputs).logits
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from hooked_vlm.testing._tiny_base import TEXT_VOCAB, TinyModel, _finish, _seeded, _text
from hooked_vlm.testing.tiny_more import MORE_BUILDERS


def tiny_llava(seed: int = 0, n_layers: int = 2) -> TinyModel:
    """LlavaForConditionalGeneration: CLIP tower (30 px, 6 px patches -> 25 features) + Llama."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    torch.manual_seed(seed)
    image_id, first_word = 3, 8
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        image_size=30, patch_size=6, projection_dim=32,
    )
    text = LlamaConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=n_layers, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=first_word + TEXT_VOCAB, max_position_embeddings=256,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=image_id,
        vision_feature_layer=-2, vision_feature_select_strategy="default",
    )
    config._attn_implementation = "eager"
    model = _finish(LlavaForConditionalGeneration(config), seed)
    n_img = 25
    gen = _seeded(seed + 1)
    rows = [[1, *_text(3, first_word, gen), *[image_id] * n_img, *_text(5, first_word, gen)]
            for _ in range(2)]
    inputs = {
        "input_ids": torch.tensor(rows),
        "attention_mask": torch.ones(2, len(rows[0]), dtype=torch.long),
        "pixel_values": torch.randn(2, 3, 30, 30, generator=gen),
    }
    return TinyModel("llava", model, inputs, n_img)


def chameleon_vocabulary(n_codes: int, words: Sequence[str] | None = None) -> dict[str, int]:
    """A Chameleon vocabulary map whose ``IMGIMG…Z`` names encode the VQ code index.

    Chameleon maps VQ code ``c`` to the token named ``IMGIMG`` + digits of ``c`` written with
    letters A-J + ``Z``; a map that does not encode the index sends every code to one token.
    Text ``words`` follow the codes (default: ``w0`` ... ``w47``).

    Example:
        >>> vocab = chameleon_vocabulary(16, ["red", "circle"])
        >>> vocab["IMGIMGBAZ"], vocab["red"]   # code 10, first word
        (16, 22)
    """
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<racm3:break>": 3, "<eoss>": 4, "<image>": 5}
    for code in range(n_codes):
        letters = "".join(chr(ord("A") + int(d)) for d in str(code))
        vocab[f"IMGIMG{letters}Z"] = len(vocab)
    for word in [f"w{i}" for i in range(TEXT_VOCAB)] if words is None else words:
        if word in vocab:
            raise ValueError(f"word {word!r} clashes with a special or image-code token")
        vocab[word] = len(vocab)
    return vocab


def tiny_chameleon(seed: int = 0, swin_norm: bool = False, n_layers: int = 2) -> TinyModel:
    """ChameleonForConditionalGeneration: 32 px images -> 8x8 = 64 VQ codes; q/k-norm."""
    from transformers import ChameleonConfig, ChameleonForConditionalGeneration
    from transformers.models.chameleon.configuration_chameleon import ChameleonVQVAEConfig

    torch.manual_seed(seed)
    n_codes = 16
    vocab = chameleon_vocabulary(n_codes)
    vq = ChameleonVQVAEConfig(
        embed_dim=8, num_embeddings=n_codes, latent_channels=8, resolution=32, base_channels=32,
        channel_multiplier=[1, 1, 2], num_res_blocks=1, attn_resolutions=[],
    )
    config = ChameleonConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=n_layers,
        num_attention_heads=4, num_key_value_heads=4, vq_config=vq.to_dict(),
        vocabulary_map=vocab, swin_norm=swin_norm, max_position_embeddings=256,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    config._attn_implementation = "eager"
    model = _finish(ChameleonForConditionalGeneration(config), seed)
    n_img, first_word = 64, vocab["w0"]
    gen = _seeded(seed + 1)
    rows = [[1, *_text(3, first_word, gen), 3, *[5] * n_img, 4, *_text(5, first_word, gen)]
            for _ in range(2)]
    inputs = {
        "input_ids": torch.tensor(rows),
        "attention_mask": torch.ones(2, len(rows[0]), dtype=torch.long),
        "pixel_values": torch.randn(2, 3, 32, 32, generator=gen),
    }
    name = "chameleon-swin" if swin_norm else "chameleon"
    return TinyModel(name, model, inputs, n_img)


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
    model = _finish(Emu3ForConditionalGeneration(config), seed)
    side = 16
    factor = 2 ** (len(vq.channel_multiplier) - 1)
    rows_, cols = side // factor, side // factor
    n_img = rows_ * (cols + 1)
    v, first_word = vocab, vocab["w0"]
    header = [v["<|image start|>"], v[str(rows_)], v["*"], v[str(cols)], v["<|image token|>"]]
    image = [*header, *[v["<image>"]] * n_img, v["<|extra_201|>"], v["<|image end|>"]]
    gen = _seeded(seed + 1)
    seqs = [[1, *_text(3, first_word, gen), *image, *_text(5, first_word, gen)] for _ in range(2)]
    inputs = {
        "input_ids": torch.tensor(seqs),
        "attention_mask": torch.ones(2, len(seqs[0]), dtype=torch.long),
        "pixel_values": torch.randn(2, 3, side, side, generator=gen),
        "image_sizes": torch.tensor([[side, side], [side, side]]),
    }
    return TinyModel("emu3", model, inputs, n_img, extras={"grid": (rows_, cols)})


TINY_BUILDERS: dict[str, Callable[..., TinyModel]] = {
    "llava": tiny_llava,
    "chameleon": tiny_chameleon,
    "chameleon-swin": lambda seed=0, **kw: tiny_chameleon(seed, swin_norm=True, **kw),
    "emu3": tiny_emu3,
    **MORE_BUILDERS,  # pixtral, mistral3, llava_next, llava_onevision, janus, qwen2_vl, ...
}


def build_tiny(name: str, seed: int = 0, **kwargs: Any) -> TinyModel:
    """Build the tiny model ``name`` (one of :data:`TINY_BUILDERS`)."""
    if name not in TINY_BUILDERS:
        raise KeyError(f"no tiny model {name!r}; available: {sorted(TINY_BUILDERS)}")
    return TINY_BUILDERS[name](seed=seed, **kwargs)
