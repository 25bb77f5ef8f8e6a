"""Time of each Narrow Gate analysis function on about 1000 points / examples, CPU.

Points are Gaussian blobs in ``--dim`` dimensions (4096 = Chameleon-7B's d_model); residuals
for the modality gap stream ``--layers`` layers of ``[n, pos, --gap-dim]``; the flow reduction
runs on one Chameleon-sized pattern (32 heads, 1024 image tokens + EOI + BOS/BOI + text),
against caching the full pattern and reducing it afterwards.

    python benchmarks/analysis.py                 # n = 1000, d = 4096
    python benchmarks/analysis.py --n 2000 --dim 512 --repeats 5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hooked_vlm.analysis import (  # noqa: E402
    adp_clustering,
    cider_d,
    cluster_vectors,
    gride_id_scaling,
    knn_log_density,
    label_overlap,
    mean_vqa_accuracy,
    modality_gap,
    modality_homogeneity,
    nearest_neighbours,
    sample_modality_vectors,
    text_to_image_mass,
    twonn_id,
)
from timing import median_time  # noqa: E402


def blobs(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    centres = 3.0 * rng.normal(size=(10, dim)) / np.sqrt(dim) * 8
    return centres[labels] + rng.normal(size=(n, dim)) / np.sqrt(dim) * 4, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--gap-dim", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    x, labels = blobs(args.n, args.dim)
    nb = nearest_neighbours(x, 128, "cosine")
    dim = float(gride_id_scaling(nb, 128)[0][3])
    density = knn_log_density(nb, dim, 16)
    half = args.n // 2
    resid = torch.randn(args.n, 40, args.gap_dim)
    text = torch.zeros(args.n, 40, dtype=torch.bool)
    text[:, 30:] = True
    sample = sample_modality_vectors([resid] * args.layers, text, ~text)
    pos, image = 1100, slice(2, 1027)
    pattern = torch.rand(1, 32, pos, pos).tril().softmax(-1)
    queries = torch.zeros(1, pos, dtype=torch.bool)
    queries[:, 1027:] = True
    keys = torch.zeros(1, pos, dtype=torch.bool)
    keys[:, image] = True
    captions = {i: f"a photo of object {i % 50} on a table" for i in range(args.n)}
    references = {i: [f"object {i % 50} lies on a table", f"a table with object {i % 47}"] * 2
                  + [f"picture number {i}"] for i in range(args.n)}  # fmt: skip
    answers = [["yes"] * 4 + ["no"] * 6 for _ in range(args.n)]
    cases = {
        "nearest_neighbours(maxk=128, cosine)": lambda: nearest_neighbours(x, 128, "cosine"),
        "nearest_neighbours(maxk=128, euclidean)": lambda: nearest_neighbours(x, 128),
        "twonn_id": lambda: twonn_id(nb),
        "gride_id_scaling(range_max=128)": lambda: gride_id_scaling(nb, 128),
        "knn_log_density(k=16)": lambda: knn_log_density(nb, dim, 16),
        "adp_clustering(z=1.65)": lambda: adp_clustering(nb, density, 1.65),
        "cluster_vectors('neurips') [whole pipeline]": lambda: cluster_vectors(x, "neurips"),
        "cluster_vectors('v1') [whole pipeline]": lambda: cluster_vectors(x, "v1"),
        "modality_homogeneity('neurips')": lambda: modality_homogeneity(x[:half], x[half:]),
        "label_overlap(k=30)": lambda: label_overlap(x, labels, k=30),
        f"sample_modality_vectors({args.layers} layers)": lambda: sample_modality_vectors(
            [resid] * args.layers, text, ~text
        ),
        f"modality_gap({args.layers} layers)": lambda: modality_gap(sample),
        f"modality_gap(across_examples, {args.layers} layers)": lambda: modality_gap(
            sample, pairs="across_examples"
        ),
        "text_to_image_mass(1 x 32 x 1100 x 1100 pattern)": lambda: text_to_image_mass(
            pattern, queries, keys
        ),
        "cider_d(ptb)": lambda: cider_d(captions, references),
        "cider_d(simple)": lambda: cider_d(captions, references, tokenizer="simple"),
        "mean_vqa_accuracy": lambda: mean_vqa_accuracy(["Yes."] * args.n, answers),
    }
    print(f"n = {args.n}, d = {args.dim}, torch threads = {torch.get_num_threads()}")
    for name, fn in cases.items():
        print(f"{name:55s} {median_time(fn, args.repeats) * 1e3:10.2f} ms")


if __name__ == "__main__":
    main()
