"""Tiny processors (word-level tokenizer + the model's real image processor), built offline.

They match the vocabularies of :mod:`hooked_vlm.families`, so ``HookedVLM.prepare`` and
``save_pretrained``/``from_pretrained`` round trips run end to end without any download.

Example:
    >>> tiny = build_tiny("llava")
    >>> processor = tiny_processor("llava")
    >>> batch = processor(images=[img], text=["<s> w1 <image> w2"], return_tensors="pt")
"""

from __future__ import annotations

from typing import Any

from hooked_vlm.families._tiny import TEXT_VOCAB
from hooked_vlm.families.chameleon import chameleon_vocabulary
from hooked_vlm.families.tokenizers import word_tokenizer


def llava_vocabulary() -> dict[str, int]:
    """The vocabulary of :func:`hooked_vlm.families.llava.tiny_llava` (words start at id 8)."""
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<image>": 3, "USER:": 4, "ASSISTANT:": 5}
    vocab.update({f"<unused{i}>": i for i in (6, 7)})
    vocab.update({f"w{i}": 8 + i for i in range(TEXT_VOCAB)})
    return vocab


def tiny_processor(name: str) -> Any:
    """A processor for tiny model ``name`` ("llava" or "chameleon")."""
    if name == "llava":
        from transformers import CLIPImageProcessor, LlavaProcessor

        image_processor = CLIPImageProcessor(
            size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30}
        )
        tokenizer = word_tokenizer(llava_vocabulary(), ["<image>"])
        return LlavaProcessor(
            image_processor=image_processor, tokenizer=tokenizer, patch_size=6,
            vision_feature_select_strategy="default", num_additional_image_tokens=1,
        )
    if name in ("chameleon", "chameleon-swin"):
        from transformers import ChameleonImageProcessor, ChameleonProcessor

        image_processor = ChameleonImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        )
        tokenizer = word_tokenizer(
            chameleon_vocabulary(16), ["<image>", "<racm3:break>", "<eoss>"]
        )
        return ChameleonProcessor(image_processor, tokenizer, image_seq_length=64)
    raise KeyError(f"no tiny processor for {name!r}; available: llava, chameleon")
