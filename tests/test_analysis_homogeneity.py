"""Modality homogeneity of ADP clusters: planted separated / mixed modalities, presets."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from hooked_vlm.analysis import PRESETS, ClusteringPreset, get_preset, modality_homogeneity


def blob(n: int, centre: np.ndarray, seed: int) -> np.ndarray:
    return centre + np.random.default_rng(seed).normal(size=(n, len(centre)))


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_separated_modalities_are_homogeneous(preset):
    d = 16
    text = blob(150, 10.0 * np.eye(d)[0], seed=0)
    image = blob(150, 10.0 * np.eye(d)[1], seed=1)
    result = modality_homogeneity(torch.from_numpy(text), image, preset)
    assert result.score == pytest.approx(1.0)
    assert result.modality.tolist() == [1] * 150 + [0] * 150
    assert result.clustering.intrinsic_dim > 0


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_mixed_modalities_are_not(preset):
    d = 16
    centre = 10.0 * np.eye(d)[0]
    result = modality_homogeneity(blob(150, centre, seed=2), blob(150, centre, seed=3), preset)
    assert result.score < 0.15


def test_presets_are_named_and_frozen():
    assert get_preset("neurips") == ClusteringPreset("neurips", "cosine", False, 128, 8, 16, 1.65)
    assert get_preset("v1") == ClusteringPreset("v1", "euclidean", True, 100, 8, 15, 1.2)
    custom = dataclasses.replace(PRESETS["neurips"], name="mine", z=3.0)
    assert get_preset(custom) is custom
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["v1"].z = 2.0
    with pytest.raises(ValueError, match="registered"):
        get_preset("v2")


def test_bad_input_is_refused():
    x = np.random.default_rng(0).normal(size=(8, 4))
    with pytest.raises(ValueError, match="needs more than 16 points"):
        modality_homogeneity(x, x + 1, "v1")
    with pytest.raises(ValueError, match="d = 4"):
        modality_homogeneity(np.ones((40, 4)), np.ones((40, 5)))
