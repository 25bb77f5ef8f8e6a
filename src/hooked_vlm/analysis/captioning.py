"""Captioning quality: CIDEr-D with pycocoevalcap (Narrow Gate, analysis 7).

pycocoevalcap's ``Cider`` is the COCO caption server's CIDEr-D (n-grams 1-4, clipped counts,
Gaussian length penalty with sigma 6, times 10). Its idf comes from the evaluated corpus itself,
so a corpus of one image scores 0 whatever the captions: :func:`cider_d` refuses fewer than two.

Tokenisation: ``"ptb"`` (default) is pycocoevalcap's ``PTBTokenizer`` (Stanford CoreNLP via
Java, lower-cased, punctuation dropped), as the official evaluation. It starts a JVM per call:
about 1 s fixed, 1.7 s for 2000 captions on the development machine. ``"simple"`` needs no Java:
lower-case, split words from punctuation, drop punctuation. It does not split contractions
("don't" stays one token, PTB gives "do n't"), so its scores differ slightly from the official
ones: use it only where Java is missing, and never mix the two in one comparison.

Example:
    >>> cider_d({"img1": "a dog runs", "img2": "two cats"},
    ...         {"img1": ["a dog is running", "dog running"], "img2": ["two cats sleep"]}).score
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

Tokenizer = Literal["ptb", "simple"]
_WORDS_AND_PUNCTUATION = re.compile(r"\d+(?:[.,]\d+)+|\w+(?:'\w+)*|[^\w\s]+")


@dataclass(frozen=True)
class CiderScore:
    """Corpus CIDEr-D (the mean over images) and each image's score."""

    score: float
    per_image: dict[Hashable, float]


def cider_d(
    candidates: Mapping[Hashable, str] | Sequence[str],
    references: Mapping[Hashable, Sequence[str]] | Sequence[Sequence[str]],
    tokenizer: Tokenizer = "ptb",
) -> CiderScore:
    """CIDEr-D of one candidate caption per image against that image's reference captions.

    Args:
        candidates: image id -> generated caption (or a list, ids are the positions).
        references: image id -> reference captions (same ids, at least one each).
        tokenizer: ``"ptb"`` (official, needs Java) or ``"simple"`` (see the module docstring).
    """
    cands = dict(candidates) if isinstance(candidates, Mapping) else dict(enumerate(candidates))
    refs = dict(references) if isinstance(references, Mapping) else dict(enumerate(references))
    if cands.keys() != refs.keys():
        differ = set(cands) ^ set(refs)
        raise ValueError(f"candidates and references must have the same image ids; not: {differ}")
    if len(cands) < 2:
        raise ValueError(
            f"CIDEr needs at least 2 images: its idf is computed over the evaluated corpus, so "
            f"{len(cands)} image(s) score 0 whatever the captions."
        )
    for key, captions in refs.items():
        if isinstance(captions, str) or len(captions) == 0:
            raise ValueError(f"image {key!r}: references must be a non-empty list of captions")
    if tokenizer not in ("ptb", "simple"):
        raise ValueError(f"tokenizer must be 'ptb' or 'simple', got {tokenizer!r}")
    tokenize = _ptb_tokenize if tokenizer == "ptb" else _simple_tokenize
    # one tokenizer call (one JVM start) for candidates and references together
    tokens = tokenize(
        {("candidate", key): [caption] for key, caption in cands.items()}
        | {("reference", key): list(captions) for key, captions in refs.items()}
    )
    res = {key: tokens[("candidate", key)] for key in cands}
    gts = {key: tokens[("reference", key)] for key in cands}
    score, scores = Cider().compute_score(gts, res)
    return CiderScore(float(score), {key: float(s) for key, s in zip(gts, scores, strict=True)})


def _ptb_tokenize(captions: dict[Hashable, list[str]]) -> dict[Hashable, list[str]]:
    # one caption per line for the JVM: any line break inside a caption would shift the rest
    flat = {k: [{"caption": " ".join(c.split())} for c in v] for k, v in captions.items()}
    # The JVM writes "PTBTokenizer tokenized N tokens ..." to the inherited stderr on every
    # call; keep it out of the user's terminal, but show it if the tokenizer fails.
    with tempfile.TemporaryFile() as log:
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(log.fileno(), 2)
            tokens = PTBTokenizer().tokenize(flat)
            failed = any(len(tokens.get(k, [])) != len(v) for k, v in captions.items())
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        if failed:
            log.seek(0)
            raise RuntimeError("PTBTokenizer returned a different number of captions than it "
                               f"was given; Java said: {log.read().decode(errors='replace')}")
    return {k: tokens[k] for k in captions}


def _simple_tokenize(captions: dict[Hashable, list[str]]) -> dict[Hashable, list[str]]:
    def one(text: str) -> str:
        tokens = _WORDS_AND_PUNCTUATION.findall(text.lower())
        return " ".join(t for t in tokens if any(ch.isalnum() for ch in t))

    return {k: [one(c) for c in v] for k, v in captions.items()}
