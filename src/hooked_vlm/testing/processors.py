"""Tiny processors (word-level tokenizer + the model's real image processor), built offline.

Video processors are left out (HF's need torchvision; see
:func:`hooked_vlm.loading.image_only`).

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
from hooked_vlm.loading import image_only


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
    if name in NEW_PROCESSORS:
        return NEW_PROCESSORS[name]()
    raise KeyError(
        f"no tiny processor for {name!r}; available: llava, chameleon, {', '.join(NEW_PROCESSORS)}"
    )


def _words(first: int) -> dict[str, int]:
    return {f"w{i}": first + i for i in range(TEXT_VOCAB)}


def tokenizer_only(cls: type) -> type:
    """Processor class ``cls`` built with its tokenizer alone (Molmo 2's image and video
    processors both need torchvision): its own token strings, no pixels."""

    class TokenizerOnly(cls):  # type: ignore[misc, valid-type]
        def check_argument_for_proper_class(self, name: str, arg: Any) -> Any:
            if name in ("video_processor", "image_processor") and arg is None:
                return None
            return super().check_argument_for_proper_class(name, arg)

    TokenizerOnly.__name__ = cls.__name__
    return TokenizerOnly


def _qwen(cls_name: str) -> Any:
    import transformers
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    specials = ["<|image_pad|>", "<|vision_start|>", "<|vision_end|>", "<|video_pad|>"]
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{t: 3 + i for i, t in enumerate(specials)},
             "<unused7>": 7, **_words(8)}
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=4, temporal_patch_size=2, merge_size=2,
        size={"shortest_edge": 256, "longest_edge": 1024},
    )
    cls = image_only(getattr(transformers, cls_name))
    return cls(image_processor=image_processor, tokenizer=word_tokenizer(vocab, specials))


def _gemma3() -> Any:
    from transformers import Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    roles = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
             "image_token": "<image_soft_token>"}
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<start_of_image>": 3, "<end_of_image>": 4,
             "<image_soft_token>": 5, "<unused6>": 6, "<unused7>": 7, **_words(8)}
    tokenizer = word_tokenizer(vocab, list(roles.values()), bos="<bos>", eos="<eos>",
                               roles=roles)
    image_processor = Gemma3ImageProcessorPil(size={"height": 24, "width": 24})
    return Gemma3Processor(image_processor, tokenizer, image_seq_length=9)


def _paligemma() -> Any:
    from transformers import PaliGemmaProcessor
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<image>": 3, "\n": 4, "<unused5>": 5,
             "<unused6>": 6, "<unused7>": 7, **_words(8)}
    tokenizer = word_tokenizer(vocab, ["<image>", "\n"], bos="<bos>", eos="<eos>",
                               add_bos=False)
    image_processor = SiglipImageProcessorPil(size={"height": 16, "width": 16})
    image_processor.image_seq_length = 16
    return PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)


def _smolvlm() -> Any:
    from transformers import SmolVLMProcessor
    from transformers.models.smolvlm.image_processing_pil_smolvlm import (
        SmolVLMImageProcessorPil,
    )

    tiles = [f"<row_{r}_col_{c}>" for r in (1, 2) for c in (1, 2)]
    specials = ["<image>", "<fake_token_around_image>", "<global-img>", "\n", *tiles]
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{t: 3 + i for i, t in enumerate(specials)},
             **_words(11)}
    image_processor = SmolVLMImageProcessorPil(
        do_image_splitting=True, size={"longest_edge": 32}, max_image_size={"longest_edge": 16},
    )
    return image_only(SmolVLMProcessor)(
        image_processor=image_processor, tokenizer=word_tokenizer(vocab, specials),
        image_seq_len=4,
    )


def _molmo2() -> Any:
    """Molmo 2's processor with its tokenizer only: its image processor is torchvision-only,
    but the image token strings come from the processor itself (``replace_image_token``)."""
    from transformers import Molmo2Processor

    specials = ["<im_start>", "<im_end>", "<im_patch>", "<im_col>", "<low_res_im_start>",
                "<frame_start>", "<frame_end>", "<im_low>"]
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **_words(8),
             **{t: 56 + i for i, t in enumerate(specials)}}
    return tokenizer_only(Molmo2Processor)(tokenizer=word_tokenizer(vocab, specials))


NEW_PROCESSORS = {
    "qwen2_5_vl": lambda: _qwen("Qwen2_5_VLProcessor"),
    "qwen3_vl": lambda: _qwen("Qwen3VLProcessor"),
    "gemma3": _gemma3,
    "paligemma": _paligemma,
    "smolvlm": _smolvlm,
    "molmo2": _molmo2,
}
