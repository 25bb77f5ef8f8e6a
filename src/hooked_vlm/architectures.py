"""What hooked-vlm knows about each supported Hugging Face VLM class.

One :class:`Architecture` per HF class: the TransformerLens adapter that wraps it, whether the
model is *native* multimodal (images as discrete tokens in the decoder's own vocabulary), and how
to read its special token ids from the HF config. The token *layout* logic itself is generic
(:mod:`hooked_vlm.layout`); this module only says which ids play which role.

Example:
    >>> arch = get_architecture("LlavaForConditionalGeneration")
    >>> arch.native
    False
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SpecialTokens:
    """Token ids that delimit an image in the input sequence (``None``: the model has none).

    ``image`` is the placeholder the model fills with image features. ``row_break`` is an explicit
    id between rows (Pixtral's ``[IMG_BREAK]``). ``eof`` ends the image content (Emu3's
    ``<|extra_201|>``). ``boi``/``eoi`` open and close the image span.
    """

    image: int
    bos: int | None = None
    boi: int | None = None
    eoi: int | None = None
    row_break: int | None = None
    eof: int | None = None
    pad: int | None = None


@dataclass(frozen=True)
class Architecture:
    """How one HF VLM class maps onto a TransformerLens bridge and a token layout."""

    hf_class: str
    native: bool
    special_tokens: Callable[[Any], SpecialTokens]
    # Extra HF config attributes the TL adapter needs (TL's config translation drops them).
    config_passthrough: tuple[str, ...] = ()
    # Emu3 scatters an end-of-line id as the last placeholder of every row: the layout needs
    # the grid (rows, cols) of each image, computed from the forward's extras.
    grid_from_inputs: Callable[[Any, dict[str, Any]], list[tuple[int, int]]] | None = None
    # Placeholders per image when every image has the same count (splits adjacent images).
    tokens_per_image: Callable[[Any], int] | None = None
    notes: str = ""
    extras: tuple[str, ...] = field(default=())  # forward kwargs besides ids/pixels/mask


def _text_config(config: Any) -> Any:
    return getattr(config, "text_config", None) or config


def _llava_tokens(config: Any) -> SpecialTokens:
    text = _text_config(config)
    return SpecialTokens(
        image=config.image_token_id, bos=text.bos_token_id, pad=text.pad_token_id
    )


def _llava_tokens_per_image(config: Any) -> int:
    vision = config.vision_config
    n = (vision.image_size // vision.patch_size) ** 2
    return n + (1 if config.vision_feature_select_strategy == "full" else 0)


def _vocab(config: Any, name: str) -> int | None:
    return (config.vocabulary_map or {}).get(name)


def _chameleon_tokens(config: Any) -> SpecialTokens:
    return SpecialTokens(
        image=_vocab(config, "<image>"),
        bos=config.bos_token_id,
        boi=_vocab(config, "<racm3:break>"),
        eoi=_vocab(config, "<eoss>"),
        pad=config.pad_token_id,
    )


def _emu3_tokens(config: Any) -> SpecialTokens:
    text = _text_config(config)
    return SpecialTokens(
        image=_vocab(config, "<image>"),
        bos=text.bos_token_id,
        boi=_vocab(config, "<|image start|>"),
        eoi=_vocab(config, "<|image end|>"),
        eof=_vocab(config, "<|extra_201|>"),
        pad=text.pad_token_id,
    )


def _emu3_grid(config: Any, extras: dict[str, Any]) -> list[tuple[int, int]]:
    from hooked_vlm.layout import LayoutError

    sizes = extras.get("image_sizes")
    if sizes is None:
        raise LayoutError(
            "Emu3's token layout needs `image_sizes` (one (height, width) per image, as the "
            "processor returns them) to find the end-of-line token closing each row of VQ "
            "codes. Pass image_sizes=... or use model.prepare(images, prompts)."
        )
    factor = 2 ** (len(config.vq_config.channel_multiplier) - 1)
    return [(int(h) // factor, int(w) // factor) for h, w in sizes.tolist()]


ARCHITECTURES: dict[str, Architecture] = {
    a.hf_class: a
    for a in [
        Architecture(
            "LlavaForConditionalGeneration",
            native=False,
            special_tokens=_llava_tokens,
            tokens_per_image=_llava_tokens_per_image,
            notes="LLaVA-1.5 has no BOI/EOI of its own: the image is a run of <image> features.",
        ),
        Architecture(
            "ChameleonForConditionalGeneration",
            native=True,
            special_tokens=_chameleon_tokens,
            config_passthrough=("swin_norm",),
            notes="<racm3:break> (BOI) + VQ codes + <eoss> (EOI).",
        ),
        Architecture(
            "Emu3ForConditionalGeneration",
            native=True,
            special_tokens=_emu3_tokens,
            grid_from_inputs=_emu3_grid,
            extras=("image_sizes",),
            notes="<|image start|>{h}*{w}<|image token|> + rows of codes ending in "
            "<|extra_200|> (EOL) + <|extra_201|> (EOF) + <|image end|> (EOI).",
        ),
    ]
}


class UnsupportedArchitectureError(ValueError):
    """The HF model class has no hooked-vlm support."""


def get_architecture(hf_class: str) -> Architecture:
    """Look up a supported HF class; a clear error lists the supported ones."""
    if hf_class in ARCHITECTURES:
        return ARCHITECTURES[hf_class]
    close = difflib.get_close_matches(hf_class, ARCHITECTURES, n=1)
    hint = f" Did you mean {close[0]}?" if close else ""
    raise UnsupportedArchitectureError(
        f"{hf_class} is not supported by hooked-vlm.{hint} Supported architectures: "
        f"{', '.join(sorted(ARCHITECTURES))}. See README 'Supported models' for the checkpoints "
        "of each, and hooked_vlm/architectures.py to add one."
    )
