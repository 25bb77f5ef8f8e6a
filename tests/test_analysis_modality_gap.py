"""Modality gap: cosines of planted vectors, sampling from masks, median and IQR."""

from __future__ import annotations

import math

import pytest
import torch

from hooked_vlm.analysis import ModalitySample, modality_gap, sample_modality_vectors

B, P, D, L = 6, 10, 8, 3


def masks() -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.zeros(B, P, dtype=torch.bool)
    image[:, 1:6] = True
    text = torch.zeros(B, P, dtype=torch.bool)
    text[:, 7:] = True
    return text, image


def planted(text_vector: torch.Tensor, image_vector: torch.Tensor) -> torch.Tensor:
    """Residuals [L, B, P, D]: noise off the masks, the given vectors (scaled) on them."""
    text, image = masks()
    resid = torch.randn(L, B, P, D, generator=torch.Generator().manual_seed(0))
    scale = torch.arange(1, P + 1, dtype=torch.float32)[None, None, :, None]  # cosine ignores it
    resid = torch.where(text[None, :, :, None], scale * text_vector, resid)
    return torch.where(image[None, :, :, None], scale * image_vector, resid)


def test_identical_vectors_give_one_and_orthogonal_zero():
    v = torch.randn(D)
    gap = modality_gap(sample_modality_vectors(planted(v, v), *masks()))
    assert torch.allclose(gap.cosine, torch.ones(L, B))
    assert torch.allclose(gap.median, torch.ones(L)) and torch.allclose(gap.q25, gap.q75)
    e = torch.eye(D)
    gap = modality_gap(sample_modality_vectors(planted(e[0], e[1]), *masks()))
    assert torch.allclose(gap.cosine, torch.zeros(L, B), atol=1e-7)


def test_absolute_variant():
    v = torch.randn(D)
    sample = sample_modality_vectors(planted(v, -v), *masks())
    assert torch.allclose(modality_gap(sample).median, -torch.ones(L))
    assert torch.allclose(modality_gap(sample, absolute=True).median, torch.ones(L))


def test_median_and_iqr_on_known_cosines():
    cosines = torch.tensor([-0.5, 0.0, 0.25, 0.5, 1.0])
    angles = torch.arccos(cosines)
    text = torch.zeros(1, 5, 2)
    text[..., 0] = 1.0
    image = torch.stack([torch.cos(angles), torch.sin(angles)], -1)[None]
    positions = torch.zeros(5, dtype=torch.long)
    gap = modality_gap(ModalitySample(text, image, positions, positions))
    assert torch.allclose(gap.cosine[0], cosines, atol=1e-6)
    assert gap.median.item() == pytest.approx(0.25, abs=1e-6)
    assert (gap.q25.item(), gap.q75.item()) == pytest.approx((0.0, 0.5), abs=1e-6)
    gap = modality_gap(ModalitySample(text, image, positions, positions), absolute=True)
    assert gap.median.item() == pytest.approx(0.5)


def test_sampling_is_seeded_inside_the_masks_and_fixed_across_layers():
    text, image = masks()
    resid = torch.arange(P, dtype=torch.float32)[None, None, :, None].expand(L, B, P, D)
    sample = sample_modality_vectors(resid, text, image, seed=3)
    assert text[torch.arange(B), sample.text_positions].all()
    assert image[torch.arange(B), sample.image_positions].all()
    # each vector is its position (constant over d), the same position at every layer
    assert torch.equal(sample.text[..., 0], sample.text_positions.float().expand(L, B))
    assert torch.equal(sample.image[..., 0], sample.image_positions.float().expand(L, B))
    again = sample_modality_vectors(list(resid), text, image, seed=3)  # per-layer iterable
    assert torch.equal(again.text, sample.text) and torch.equal(again.image, sample.image)
    draws = {tuple(sample_modality_vectors(resid, text, image, seed=s).image_positions.tolist())
             for s in range(5)}  # fmt: skip
    assert len(draws) > 1


def test_across_examples_pairs_text_i_with_image_j_below_i():
    text, image = torch.randn(L, B, D), torch.randn(L, B, D)
    positions = torch.zeros(B, dtype=torch.long)
    sample = ModalitySample(text, image, positions, positions)
    gap = modality_gap(sample, pairs="across_examples")
    assert gap.cosine.shape == (L, math.comb(B, 2))
    expected = torch.nn.functional.cosine_similarity(text[:, 3], image[:, 1], dim=-1)
    i, j = torch.tril_indices(B, B, offset=-1)
    pick = ((i == 3) & (j == 1)).nonzero().item()
    assert torch.allclose(gap.cosine[:, pick], expected, atol=1e-6)


def test_bad_input_is_refused():
    text, image = masks()
    text[2] = False
    with pytest.raises(ValueError, match=r"example\(s\) \[2\] have no position"):
        sample_modality_vectors(torch.zeros(L, B, P, D), text, image)
    with pytest.raises(ValueError, match="is not"):
        sample_modality_vectors(torch.zeros(L, B, P + 1, D), *masks())
    sample = sample_modality_vectors(torch.randn(L, B, P, D), *masks())
    with pytest.raises(ValueError, match="pairs must be"):
        modality_gap(sample, pairs="all")
