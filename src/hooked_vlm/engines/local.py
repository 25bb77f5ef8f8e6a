"""The local engine: one worker, in this process.

Example:
    >>> with LocalEngine().start(job) as pool:   # builds the session once
    ...     pool.run(Shard(0, 4).of(units))      # a Slurm array task's share
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from hooked_vlm.engines.base import Job, OnUnit, Worker


class LocalPool:
    """One worker in this process; units run in the order given."""

    workers = 1

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.fingerprints = [getattr(worker, "fingerprint", None)]

    def run(self, units: Sequence[Any], on_unit: OnUnit | None = None) -> int:
        computed = 0
        for unit in units:
            fresh = bool(self.worker(unit))
            computed += fresh
            if on_unit is not None:
                on_unit(unit, fresh)
        return computed


@dataclass(frozen=True)
class LocalEngine:
    """Runs the job's worker in this process (the job need not be picklable)."""

    remote = False

    @contextmanager
    def start(self, job: Job) -> Iterator[LocalPool]:
        yield LocalPool(job())
