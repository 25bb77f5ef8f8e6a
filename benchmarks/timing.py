"""Wall-clock timing shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def median_time(fn: Callable[[], object], repeats: int, device: str = "cpu") -> float:
    """Median seconds of ``fn`` over ``repeats`` runs after one warm-up, synchronising CUDA
    around each run so GPU work is counted.

    Example:
        >>> median_time(lambda: model(inputs), repeats=10, device="cuda")
    """
    fn()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
