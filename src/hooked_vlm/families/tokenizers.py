"""Word-level tokenizers built offline, for the tiny models (tests) and the embedded ones.

Every whitespace-separated word is one token, so a vocabulary made of a dataset's words and a
prompt template's words tokenizes both exactly. Nothing is downloaded.

Example:
    >>> tok = word_tokenizer({"<pad>": 0, "<s>": 1, "</s>": 2, "<image>": 3, "red": 4},
    ...                      ["<image>"])
    >>> tok("<image> red")["input_ids"]
    [1, 3, 4]
"""

from __future__ import annotations

from typing import Any

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast


def word_tokenizer(
    vocab: dict[str, int],
    specials: list[str],
    bos: str = "<s>",
    eos: str = "</s>",
    add_bos: bool = True,
    roles: dict[str, str] | None = None,
) -> Any:
    """A whitespace word-level fast tokenizer over ``vocab``; ``specials`` are never split
    (a special ``"\n"`` survives the whitespace split). ``add_bos=False`` leaves BOS to the
    caller (PaliGemma's processor places it after the image). ``roles`` names special tokens
    a processor reads off its tokenizer (``{"boi_token": "<start_of_image>"}`` gives
    ``tokenizer.boi_token`` and ``.boi_token_id``), saved with it."""
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, vocab[bos])]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token="<pad>",
        unk_token="<pad>", **({"extra_special_tokens": roles} if roles else {}),
    )
    fast.add_special_tokens({"additional_special_tokens": specials})
    fast.padding_side = "left"
    return fast
