"""VQA accuracy with the standard VQAv2 answer normalisation (Narrow Gate, analysis 7).

Rules of the official VQA evaluation (Antol et al. 2015; VQAv2, Goyal et al. 2017), written
anew here from its documented behaviour:

- line breaks and tabs become spaces; surrounding space is stripped;
- punctuation ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` is deleted when it touches a space
  or the text has a digit-comma-digit group (``1,000``), and replaced by a space otherwise;
  a period is deleted unless a digit follows it (``2.5`` keeps it; the official pattern meant
  "between digits" but, as written, only looks ahead);
- lower case; number words ``none zero one ... ten`` become digits (``none`` -> ``0``); the
  articles ``a an the`` are dropped; contractions written without their apostrophe get it back
  (``dont`` -> ``don't``);
- accuracy of an answer: for each of the 10 human answers, ``min(#matches among the other 9 /
  3, 1)``, averaged over the 10 leave-one-out subsets. So 3 of 10 humans -> 0.9, 4 or more ->
  1.0, 1 of 10 -> 0.3.

Two departures, both where the official script's behaviour is an accident: it normalises the
predicted and human answers only when the humans disagree (then the human answers get the
punctuation rule only); here both are always fully normalised. Its contraction table also maps
``somebody'd`` -> ``somebodyd`` (reversed) and has capitalised keys (``Im``) that lower-cased
text never reaches; those entries are left out.

Example:
    >>> vqa_accuracy("Two.", ["2"] * 10)
    1.0
    >>> normalize_answer("The dogs' ball, isnt it?")
    "dogs' ball isn't it"
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
                "@", "`", ",", "?", "!")  # fmt: skip
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
_ARTICLES = frozenset({"a", "an", "the"})
# Contracted forms the official table restores; each is reached from every spelling that lacks
# exactly one of its apostrophes (couldn't've <- couldnt've, couldn'tve).
_CONTRACTED = """
ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't
haven't he'd he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am mightn't
mightn't've might've mustn't must've needn't not've o'clock oughtn't 'ow's'at shan't she'd've
should've shouldn't shouldn't've somebody'd've somebody'll somebody's someone'd someone'd've
someone'll someone's something'd something'd've something'll that's there'd there'd've there're
there's they'd they'd've they'll they're they've 'twas wasn't we'd've we've weren't what'll
what're what's what've when's where'd where's where've who'd who'd've who'll who's who've
why'll why're why's won't would've wouldn't wouldn't've y'all y'all'll y'all'd've you'd
you'd've you'll you're you've
""".split()
_CONTRACTIONS = {
    form[:i] + form[i + 1 :]: form
    for form in _CONTRACTED
    for i, ch in enumerate(form)
    if ch == "'"
}


def normalize_answer(answer: str) -> str:
    """An answer in the VQA evaluation's normal form (see the module docstring)."""
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for p in _PUNCTUATION:
        touches_space = (p + " " in text) or (" " + p in text)
        out = out.replace(p, "" if touches_space or delete_all else " ")
    out = _PERIOD_NOT_BEFORE_DIGIT.sub("", out)
    words = [_NUMBER_WORDS.get(w, w) for w in out.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def vqa_accuracy(prediction: str, human_answers: Sequence[str]) -> float:
    """VQA accuracy of one predicted answer against the human answers (10 in VQAv2)."""
    if isinstance(human_answers, str) or len(human_answers) < 2:
        raise ValueError(
            "human_answers must be a list of at least 2 answers (VQAv2 has 10 per question); "
            f"got {human_answers!r}"
        )
    predicted = normalize_answer(prediction)
    matches = np.array([normalize_answer(a) == predicted for a in human_answers], dtype=float)
    others_matching = matches.sum() - matches  # leave each human answer out in turn
    return float(np.minimum(others_matching / 3.0, 1.0).mean())


def mean_vqa_accuracy(
    predictions: Sequence[str], human_answers: Sequence[Sequence[str]]
) -> tuple[float, np.ndarray]:
    """Mean VQA accuracy over questions, and the accuracy of each question."""
    if len(predictions) != len(human_answers) or not predictions:
        raise ValueError(
            f"need one list of human answers per prediction, at least one question; got "
            f"{len(predictions)} predictions and {len(human_answers)} answer lists"
        )
    pairs = zip(predictions, human_answers, strict=True)
    per_question = np.array([vqa_accuracy(p, answers) for p, answers in pairs])
    return float(per_question.mean()), per_question
