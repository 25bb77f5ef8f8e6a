"""Wall-clock timing shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

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


def interleaved_rounds(
    methods: Mapping[str, tuple[Callable[[], object], int]],
    rounds: int,
    device: str = "cpu",
    after_round: Callable[[], float] | None = None,
) -> tuple[dict[str, list[float]], dict[str, list[float]], list[float]]:
    """Wall and CPU seconds per item of each ``name: (fn, items per call)``, timed in
    ``rounds`` interleaved rounds (a shared machine's load hits each method alike), and what
    ``after_round`` (e.g. a one-off rebuilt and timed) returns after each round.

    Example:
        >>> wall, cpu, _ = interleaved_rounds({"forward": (lambda: model(inputs), 1)}, 3)
    """
    wall: dict[str, list[float]] = {name: [] for name in methods}
    cpu: dict[str, list[float]] = {name: [] for name in methods}
    extra = []
    for _ in range(rounds):
        for name, (fn, n) in methods.items():
            w, c = time_and_cpu(fn, device)
            wall[name].append(w / n)
            cpu[name].append(c / n)
        if after_round is not None:
            extra.append(after_round())
    return wall, cpu, extra
