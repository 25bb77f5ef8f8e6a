"""Density peaks against DADApy 0.3.4's own outputs (committed fixture) and planted structure.

The fixture is written by scripts/dadapy_reference.py in a venv of its own (DADApy needs
numpy<2): data from a fixed seed plus DADApy's TwoNN, Gride, kNN density, ADP labels and
label overlap, called exactly as the Narrow Gate code calls them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hooked_vlm.analysis import (
    adp_clustering,
    cluster_vectors,
    gride_id,
    gride_id_scaling,
    knn_log_density,
    label_overlap,
    nearest_neighbours,
    twonn_id,
)

FIXTURE = Path(__file__).parent / "fixtures" / "dadapy_reference.npz"


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as f:
        return {key: f[key] for key in f.files}


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when a and b are the same clustering up to the names of the clusters."""
    pairs = {(int(x), int(y)) for x, y in zip(a, b, strict=True)}
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_twonn_and_gride_match_dadapy(ref):
    nb = nearest_neighbours(ref["x"], maxk=128)
    assert twonn_id(nb) == pytest.approx(float(ref["twonn_id"]), abs=1e-6)
    ids, errs, n2 = gride_id_scaling(nb, range_max=128)
    assert n2.tolist() == [2, 4, 8, 16, 32, 64, 128]
    np.testing.assert_allclose(ids, ref["gride_euclidean"], atol=1e-6)
    np.testing.assert_allclose(errs, ref["gride_euclidean_err"], atol=1e-6)


@pytest.mark.parametrize(
    ("preset", "metric", "points", "maxk", "k", "z"),
    [("neurips", "cosine", lambda x: x, 128, 16, 1.65), ("v1", "euclidean", unit, 100, 15, 1.2)],
)
def test_preset_pipeline_matches_dadapy(ref, preset, metric, points, maxk, k, z):
    x = points(ref["x"])
    ids, errs, _ = gride_id_scaling(nearest_neighbours(x, 128, metric), range_max=128)
    np.testing.assert_allclose(ids, ref[f"{preset}_gride"], atol=1e-6)
    np.testing.assert_allclose(errs, ref[f"{preset}_gride_err"], atol=1e-6)
    nb = nearest_neighbours(x, maxk, metric)
    density = knn_log_density(nb, ids[3], k)
    np.testing.assert_allclose(density.log_density, ref[f"{preset}_log_den"], atol=1e-6)
    np.testing.assert_allclose(density.error, ref[f"{preset}_log_den_err"], atol=1e-12)
    clusters = adp_clustering(nb, density, z)
    assert same_partition(clusters.labels, ref[f"{preset}_labels"])
    # DADApy's Cython and pure-Python ADP agree with each other on this data too
    assert same_partition(ref[f"{preset}_labels"], ref[f"{preset}_labels_pure_python"])
    # the homogeneity preset of the same name runs this exact pipeline
    assert same_partition(cluster_vectors(ref["x"], preset).clusters.labels, clusters.labels)


def test_adp_merging_matches_dadapy_on_many_peaks(ref):
    nb = nearest_neighbours(ref["x"], maxk=60)
    dim = twonn_id(nb)
    scans = [key for key in ref if key.startswith("scan_")]  # scan_k{k}_z{Z}_labels
    assert len(scans) == 4
    for key in scans:
        _, k, z, _ = key.split("_")
        clusters = adp_clustering(nb, knn_log_density(nb, dim, int(k[1:])), float(z[1:]))
        assert same_partition(clusters.labels, ref[key]), key
    assert len(set(ref["scan_k4_z0.3_labels"].tolist())) > 10  # many peaks survive there


def test_adp_follows_dadapys_cython_where_its_python_variant_differs(ref):
    # maxk = k = 3: DADApy's pure-Python border search skips p2's last neighbour
    nb = nearest_neighbours(ref["tight_x"], maxk=3)
    clusters = adp_clustering(nb, knn_log_density(nb, twonn_id(nb), 3), z=1.0)
    assert same_partition(clusters.labels, ref["tight_labels"])
    assert not same_partition(ref["tight_labels"], ref["tight_labels_pure_python"])


def test_label_overlap_matches_dadapy(ref):
    x, labels = ref["x"], ref["labels"]
    weighted = label_overlap(x, labels, k=30, class_balanced=True)
    assert weighted == pytest.approx(float(ref["overlap_weighted"]), abs=1e-12)
    unweighted = label_overlap(x, labels, k=30)
    assert unweighted == pytest.approx(float(ref["overlap_unweighted"]), abs=1e-12)
    assert weighted != pytest.approx(unweighted)  # the classes are unequal: the choice matters


def planted_subspace(n: int, dim: int, ambient: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(ambient, dim)))[0]
    return rng.uniform(size=(n, dim)) @ basis.T


@pytest.mark.parametrize("dim", [2, 5])
def test_intrinsic_dimension_of_a_planted_subspace(dim):
    nb = nearest_neighbours(planted_subspace(2000, dim, 20, seed=dim), maxk=16)
    assert twonn_id(nb) == pytest.approx(dim, rel=0.12)
    estimate, error = gride_id(nb, n1=4)
    assert estimate == pytest.approx(dim, rel=0.12)
    assert 0 < error < 0.2 * dim


def test_knn_density_follows_a_known_gaussian():
    x = np.random.default_rng(0).normal(size=(3000, 2))
    density = knn_log_density(nearest_neighbours(x, maxk=32), intrinsic_dim=2.0, k=32)
    true_log_density = -np.log(2 * np.pi) - 0.5 * (x**2).sum(1)
    inner = (x**2).sum(1) < 4  # the estimate is biased in the sparse tails
    error = density.log_density[inner] - true_log_density[inner]
    assert abs(np.median(error)) < 0.1
    assert np.corrcoef(density.log_density, true_log_density)[0, 1] > 0.95
    assert density.error == pytest.approx(np.full(3000, 1 / np.sqrt(32)))


def test_adp_finds_planted_blobs_and_one_blob_stays_one():
    rng = np.random.default_rng(1)
    truth = np.repeat([0, 1, 2], 150)
    x = rng.normal(size=(450, 6)) + 8.0 * np.eye(6)[truth]
    nb = nearest_neighbours(x, maxk=50)
    clusters = adp_clustering(nb, knn_log_density(nb, twonn_id(nb), k=16), z=1.65)
    assert same_partition(clusters.labels, truth)
    assert sorted(clusters.labels[clusters.centers].tolist()) == [0, 1, 2]
    nb = nearest_neighbours(rng.normal(size=(400, 6)), maxk=50)
    assert adp_clustering(nb, knn_log_density(nb, twonn_id(nb), k=16), z=1.65).n_clusters == 1


def test_bad_input_is_refused():
    x = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ValueError, match="below the number of points"):
        nearest_neighbours(x, maxk=20)
    with pytest.raises(ValueError, match="unknown metric"):
        nearest_neighbours(x, maxk=5, metric="manhattan")
    nb = nearest_neighbours(x, maxk=5)
    with pytest.raises(ValueError, match="up to rank 8"):
        gride_id(nb, n1=4)
    with pytest.raises(ValueError, match="keep_fraction"):
        twonn_id(nb, keep_fraction=1.0)
    with pytest.raises(ValueError, match="NaN"):
        nearest_neighbours(np.full((5, 2), np.nan), maxk=2)
    with pytest.warns(UserWarning, match="distance 0"):
        nearest_neighbours(np.vstack([x, x[:1]]), maxk=3)
