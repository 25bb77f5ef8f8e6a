"""Word-level vocabularies and the real HF processors of the two tiny trained models.

Every word of the synthetic dataset and of the model config's prompt templates is one token
(:func:`hooked_vlm.families.tokenizers.word_tokenizer`), so each class name is a single token.

Example:
    >>> processor = build_processor("tiny-llava")
    >>> processor.tokenizer.tokenize("what is the main object ?")
    ['what', 'is', 'the', 'main', 'object', '?']
"""

from __future__ import annotations

from typing import Any

from hooked_vlm.data import synthetic
from hooked_vlm.families.chameleon import chameleon_vocabulary
from hooked_vlm.families.tokenizers import word_tokenizer
from hooked_vlm.model_configs import ModelConfig, load_model_config

N_CODES = 512  # VQ codebook size of tiny-native
PATCH_SIZE = 8  # CLIP patch of tiny-llava: 64 px / 8 = 8 x 8 features
LLAVA_SPECIALS = {"<pad>": 0, "<s>": 1, "</s>": 2, "<image>": 3}


def text_words(model_config: ModelConfig) -> list[str]:
    """The sorted words of the synthetic dataset and of the config's prompt templates."""
    templates = [*model_config.prompts.values(), model_config.extra.get("generation_prompt", "")]
    words = set(synthetic.words())
    for template in templates:
        words.update(w for w in template.split() if not w.startswith(("{", "<")))
    return sorted(words)


def is_native(name: str) -> bool:
    """Whether tiny model ``name`` is native (a Chameleon: VQ code tokens) or a LLaVA."""
    cfg = load_model_config(name)
    if not cfg.embedded:
        raise KeyError(f"{name!r} is not a tiny trained model (its model config is not "
                       "embedded); tiny models: tiny-native, tiny-gate, tiny-llava")
    return bool(cfg.native)


def vocabulary(name: str) -> dict[str, int]:
    """The token -> id map of tiny model ``name`` (e.g. "tiny-native", "tiny-llava")."""
    words = text_words(load_model_config(name))
    if is_native(name):
        return chameleon_vocabulary(N_CODES, words)
    return {**LLAVA_SPECIALS, **{w: len(LLAVA_SPECIALS) + i for i, w in enumerate(words)}}


def build_processor(name: str) -> Any:
    """The processor of ``name``: its word-level tokenizer and the HF image processor.

    Image processors are the PIL backends (no torchvision needed): tiny-native's
    ``ChameleonImageProcessorPil`` maps pixels to ``x * 0.0078 - 1``; tiny-llava's
    ``CLIPImageProcessorPil`` uses CLIP's mean and std. Both keep 64 x 64 images as they are.
    """
    cfg = load_model_config(name)
    size = cfg.image_size
    vocab = vocabulary(name)
    if is_native(name):
        from transformers import ChameleonImageProcessorPil, ChameleonProcessor

        images = ChameleonImageProcessorPil(
            size={"shortest_edge": size}, crop_size={"height": size, "width": size}
        )
        tokenizer = word_tokenizer(vocab, ["<image>", "<racm3:break>", "<eoss>"])
        return ChameleonProcessor(images, tokenizer, image_seq_length=cfg.image_tokens)
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    images = CLIPImageProcessorPil(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )
    return LlavaProcessor(
        image_processor=images, tokenizer=word_tokenizer(vocab, ["<image>"]),
        patch_size=PATCH_SIZE, vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
