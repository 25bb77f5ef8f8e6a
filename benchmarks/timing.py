"""Wall-clock timing shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def time_once(fn: Callable[[], object], device: str = "cpu") -> float:
    """Seconds of one call of ``fn``, synchronising CUDA around it so GPU work is counted.

    Example:
        >>> time_once(lambda: model(inputs), device="cuda")
    """
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def time_and_cpu(fn: Callable[[], object], device: str = "cpu") -> tuple[float, float]:
    """``(wall seconds, CPU seconds of this process)`` of one call of ``fn``. On a shared
    machine the CPU time is the steadier measure of the work done (waiting for a core is not
    counted); with several threads it adds up their times.

    Example:
        >>> wall, cpu = time_and_cpu(lambda: model(inputs))
    """
    cpu = time.process_time()
    wall = time_once(fn, device)
    return wall, time.process_time() - cpu


def median_time(fn: Callable[[], object], repeats: int, device: str = "cpu") -> float:
    """Median seconds of ``fn`` over ``repeats`` runs after one warm-up.

    Example:
        >>> median_time(lambda: model(inputs), repeats=10, device="cuda")
    """
    fn()
    return statistics.median(time_once(fn, device) for _ in range(repeats))
