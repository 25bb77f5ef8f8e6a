"""The special token ids a :class:`~hooked_vlm.layout.TokenLayout` is built from.

The layout owns its input types; :mod:`hooked_vlm.families` reads them from each HF config.

Example:
    >>> SpecialTokens(image=3, boi=4, eoi=5)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SpecialTokens:
    """Token ids that delimit an image in the input sequence (``None``: the model has none).

    ``image`` is the placeholder the model fills with image features. ``row_break`` is an explicit
    id between rows (Pixtral's ``[IMG_BREAK]``). ``eof`` ends the image content (Emu3's
    ``<|extra_201|>``). ``boi``/``eoi`` open and close the image span. ``image_inner`` are
    structural ids inside the span (Idefics3's ``<fake_token_around_image>``, ``<row_r_col_c>``,
    ``<global-img>``); a ``row_break`` counts as image only between two image runs, so a text
    id (Idefics3's ``\\n``) can serve.
    """

    image: int
    bos: int | None = None
    boi: int | None = None
    eoi: int | None = None
    row_break: int | None = None
    eof: int | None = None
    pad: int | None = None
    image_inner: tuple[int, ...] = ()
    # The placeholder of video frames where it differs from ``image`` (Qwen-VL's
    # <|video_pad|>); a video's span is split into frames (see TokenLayout's frame index).
    video: int | None = None
    # Roles the family has whose id neither the HF config nor a tokenizer gave (a bare HF
    # Janus without its processor, say): a layout error then says how to name the id.
    unknown: tuple[str, ...] = ()
