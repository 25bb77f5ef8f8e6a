"""VQA accuracy: the official leave-one-out rule and answer normalisation on known cases."""

from __future__ import annotations

import pytest

from hooked_vlm.analysis import mean_vqa_accuracy, normalize_answer, vqa_accuracy


@pytest.mark.parametrize(
    ("humans_agreeing", "expected"),
    # min(matches among the other 9 / 3, 1), averaged over the 10 humans left out in turn:
    # with m agreeing, m subsets see m - 1 matches and 10 - m see m
    [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)],
)
def test_leave_one_out_rule(humans_agreeing, expected):
    answers = ["red"] * humans_agreeing + ["blue"] * (10 - humans_agreeing)
    assert vqa_accuracy("red", answers) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("Two.", "2"),
        ("none", "0"),
        ("The red one", "red 1"),
        ("an apple", "apple"),
        ("dont", "don't"),
        ("couldnt've", "couldn't've"),
        ("Yes!", "yes"),
        ("1,000", "1000"),
        ("2.5 meters.", "2.5 meters"),
        ("black-and-white", "black and white"),
        ("black - white", "black  white"),
        ("left\tside\n", "left side"),
        ("(sign)", "sign"),
    ],
)
def test_normalisation(raw, normal):
    assert normalize_answer(raw) == " ".join(normal.split())


def test_normalisation_reaches_the_score():
    assert vqa_accuracy("Two.", ["2"] * 10) == 1.0
    assert vqa_accuracy("A Dog", ["dog"] * 3 + ["cat"] * 7) == pytest.approx(0.9)
    mean, per_question = mean_vqa_accuracy(["yes", "no"], [["yes"] * 10, ["yes"] * 10])
    assert mean == 0.5 and per_question.tolist() == [1.0, 0.0]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least 2 answers"):
        vqa_accuracy("yes", "yes")
    with pytest.raises(ValueError, match="one list of human answers per prediction"):
        mean_vqa_accuracy(["yes"], [])
