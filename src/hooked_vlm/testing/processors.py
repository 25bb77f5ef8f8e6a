"""Tiny processors (word-level tokenizer + the model's real image processor), built offline.

They match the vocabularies of :mod:`hooked_vlm.testing.tiny`, so ``HookedVLM.prepare`` and
``save_pretrained``/``from_pretrained`` round trips run end to end without any download.

Example:
    >>> tiny = build_tiny("llava")
    >>> processor = tiny_processor("llava")
    >>> batch = processor(images=[img], text=["<s> w1 <image> w2"], return_tensors="pt")
"""

from __future__ import annotations

from typing import Any

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from hooked_vlm.testing.tiny import TEXT_VOCAB, chameleon_vocabulary


def word_tokenizer(vocab: dict[str, int], specials: list[str], bos: str = "<s>") -> Any:
    """A whitespace word-level fast tokenizer over ``vocab``; ``specials`` are never split."""
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, vocab[bos])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token="</s>", pad_token="<pad>",
        unk_token="<pad>",
    )
    fast.add_special_tokens({"additional_special_tokens": specials})
    fast.padding_side = "left"
    return fast


def llava_vocabulary() -> dict[str, int]:
    """The vocabulary of :func:`hooked_vlm.testing.tiny.tiny_llava` (words start at id 8)."""
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
