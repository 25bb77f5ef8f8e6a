"""CIDEr-D: equal to pycocoevalcap's own pipeline, and ordered as the captions are."""

from __future__ import annotations

import shutil

import pytest
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from hooked_vlm.analysis import cider_d

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="PTBTokenizer runs Java")

REFERENCES = {
    "dog": ["A brown dog runs across the grass.", "A dog running on a lawn.", "The dog runs."],
    "cats": ["Two cats sleep on a red sofa.", "Two cats are sleeping on the couch."],
    "bike": ["A man rides a bicycle down the street.", "Someone riding a bike in the city."],
    "beach": ["Children play in the sand at the beach.", "Kids playing on a sandy beach."],
}
CANDIDATES = {
    "dog": "a dog runs on the grass",
    "cats": "two cats sleeping on a sofa",
    "bike": "a man riding a bike",
    "beach": "a plate of food on a table",
}


@needs_java
def test_equals_pycocoevalcap_pipeline():
    ours = cider_d(CANDIDATES, REFERENCES)
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in REFERENCES.items()})
    res = tokenizer.tokenize({k: [{"caption": c}] for k, c in CANDIDATES.items()})
    score, per_image = Cider().compute_score(gts, res)
    assert ours.score == pytest.approx(score, abs=1e-12)
    assert [ours.per_image[k] for k in gts] == pytest.approx(list(per_image), abs=1e-12)


@pytest.mark.parametrize("tokenizer", [pytest.param("ptb", marks=needs_java), "simple"])
def test_matching_captions_score_above_unrelated_ones(tokenizer):
    matching = {k: refs[0] for k, refs in REFERENCES.items()}
    unrelated = dict(zip(REFERENCES, list(matching.values())[1:] + list(matching.values())[:1],
                         strict=True))  # fmt: skip
    good = cider_d(matching, REFERENCES, tokenizer=tokenizer)
    bad = cider_d(unrelated, REFERENCES, tokenizer=tokenizer)
    assert good.score > 1.0 > 0.1 > bad.score
    assert all(good.per_image[k] > bad.per_image[k] for k in REFERENCES)


@needs_java
def test_simple_tokenizer_agrees_without_contractions():
    assert cider_d(CANDIDATES, REFERENCES, "simple").score == pytest.approx(
        cider_d(CANDIDATES, REFERENCES, "ptb").score, abs=1e-12
    )


def test_lists_are_accepted_and_bad_input_refused():
    candidates, references = list(CANDIDATES.values()), list(REFERENCES.values())
    assert cider_d(candidates, references, "simple").score == pytest.approx(
        cider_d(CANDIDATES, REFERENCES, "simple").score
    )
    with pytest.raises(ValueError, match="at least 2 images"):
        cider_d({"dog": "a dog"}, {"dog": ["a dog runs"]}, "simple")
    with pytest.raises(ValueError, match="same image ids"):
        cider_d({"dog": "a", "cats": "b"}, {"dog": ["a"], "bike": ["b"]}, "simple")
    with pytest.raises(ValueError, match="non-empty list"):
        cider_d({"a": "x", "b": "y"}, {"a": "x", "b": ["y"]}, "simple")
    with pytest.raises(ValueError, match="tokenizer must be"):
        cider_d(CANDIDATES, REFERENCES, "nltk")
