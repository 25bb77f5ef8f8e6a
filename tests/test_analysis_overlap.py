"""Neighbourhood overlap with labels, and the token pickers that feed it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hooked_vlm.analysis import chance_overlap, label_overlap, mean_token_vector, token_vectors


def test_perfectly_clustered_labels_give_one():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)
    x = rng.normal(size=(200, 8)) + 20.0 * np.eye(8)[labels]
    assert label_overlap(x, labels, k=30) == 1.0
    assert label_overlap(torch.from_numpy(x), torch.from_numpy(labels), k=30) == 1.0


@pytest.mark.parametrize("n_classes", [2, 5])
def test_shuffled_balanced_labels_give_one_over_c(n_classes):
    rng = np.random.default_rng(n_classes)
    x = rng.normal(size=(2000, 8))
    labels = rng.permutation(np.repeat(np.arange(n_classes), 2000 // n_classes))
    # a neighbour shares the label with probability (n/C - 1)/(n - 1), a hair under 1/C
    assert label_overlap(x, labels, k=30) == pytest.approx(1 / n_classes, abs=0.02)


def test_class_balanced_weighs_classes_equally():
    # class 0 (300 points) alone in its blob; classes 1 and 2 (100 each) share another
    rng = np.random.default_rng(1)
    labels = np.array([0] * 300 + [1] * 100 + [2] * 100)
    x = rng.normal(size=(500, 4))
    x[labels == 0] += 20.0
    plain = label_overlap(x, labels, k=30)
    balanced = label_overlap(x, labels, k=30, class_balanced=True)
    # per point: about 1 in class 0, about 1/2 in classes 1 and 2
    assert plain == pytest.approx((300 * 1 + 200 * 0.5) / 500, abs=0.03)
    assert balanced == pytest.approx((1 + 0.5 + 0.5) / 3, abs=0.03)


def test_bad_input_is_refused():
    x = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match="below the number of points n = 10"):
        label_overlap(x, np.zeros(10), k=10)
    with pytest.raises(ValueError, match="9 labels for 10 points"):
        label_overlap(x, np.zeros(9), k=3)


def test_token_pickers():
    acts = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    eoi = torch.zeros(2, 5, dtype=torch.bool)
    eoi[0, 3] = eoi[1, 1] = True
    assert torch.equal(token_vectors(acts, eoi), torch.stack([acts[0, 3], acts[1, 1]]))
    image = torch.zeros(2, 5, dtype=torch.bool)
    image[0, 1:4] = True
    image[1, 0] = True
    expected = torch.stack([acts[0, 1:4].mean(0), acts[1, 0]])
    assert torch.allclose(mean_token_vector(acts, image), expected)
    with pytest.raises(ValueError, match=r"exactly one True per example; example\(s\) \[0\]"):
        token_vectors(acts, image)
    with pytest.raises(ValueError, match="no True position"):
        mean_token_vector(acts, torch.zeros(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool mask"):
        token_vectors(acts, eoi.long())
    with pytest.raises(ValueError, match=r"\[batch, pos, d\]"):
        token_vectors(acts[0], eoi)


def test_chance_overlap_is_what_label_blind_neighbours_score():
    assert chance_overlap(["a", "a", "b", "b"]) == pytest.approx(1 / 3)  # 1 of 3 others
    rng = np.random.default_rng(0)
    labels = rng.choice(3, size=3000, p=[0.6, 0.3, 0.1])
    points = rng.normal(size=(3000, 4))  # features that ignore the labels
    for balanced in (False, True):
        expected = chance_overlap(labels, balanced)
        measured = label_overlap(points, labels, k=30, class_balanced=balanced)
        assert measured == pytest.approx(expected, abs=0.02)
    assert chance_overlap(labels) > chance_overlap(labels, class_balanced=True)
