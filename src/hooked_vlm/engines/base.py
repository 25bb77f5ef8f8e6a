"""What every engine shares: the job / worker / pool protocols and sharding by index.

Example:
    >>> Shard.parse("1/3").of(list(range(10)))          # task 1 of a 3-task Slurm array
    [3, 4, 5, 6]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

U = TypeVar("U")
OnUnit = Callable[[Any, bool], None]  # (unit, computed): called as each unit completes


class EngineError(RuntimeError):
    """An engine could not start its workers or finish its units."""


class Worker(Protocol):
    """One worker's session: ``worker(unit)`` computes ``unit`` into the shared store unless it
    is done already, and says whether it computed it. Must be idempotent: a unit may run twice
    (a retried unit whose first worker died after writing it). A worker may carry a
    ``fingerprint`` (what its loaded model is: see :mod:`hooked_vlm.fingerprint`), which the
    pool reports so that a run can check every worker computes with the same weights."""

    def __call__(self, unit: Any) -> bool: ...


# Run once per worker process; builds the session (model, examples, store). Picklable for
# engines whose workers live in other processes (a dataclass or functools.partial of
# module-level functions; Ray's cloudpickle also takes closures).
Job = Callable[[], Worker]


class Pool(Protocol):
    """Started workers, each holding its session; ``run`` may be called any number of times.
    ``fingerprints``: each worker's ``fingerprint`` (None where it has none)."""

    workers: int
    fingerprints: list[Any]

    def run(self, units: Sequence[Any], on_unit: OnUnit | None = None) -> int:
        """Compute ``units`` (any order, each once); returns how many were computed."""
        ...


class Engine(Protocol):
    """Starts workers for a job. ``remote``: workers live in other processes, so the job is
    pickled and the caller needs no model of its own."""

    remote: bool

    def start(self, job: Job) -> AbstractContextManager[Pool]: ...


@dataclass(frozen=True)
class Shard:
    """Task ``index`` of ``count`` (a Slurm array task): a contiguous block of the work.

    Shard the *whole* list of a run's units, never the units still missing: every task of an
    array must cut the same list, whatever the others have finished when it starts.

    Example:
        >>> Shard.parse("1/3").of(list(range(10)))   # --shard $SLURM_ARRAY_TASK_ID/N
        [3, 4, 5, 6]
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        bad = any(isinstance(v, bool) or not isinstance(v, int) for v in (self.index, self.count))
        if bad or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need integers with "
                             "0 <= index < count (a shard is written 'i/N', e.g. '0/4').")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"i/N"`` -> ``Shard(i, N)``; a clear ``ValueError`` for anything else."""
        try:
            index, count = (int(part) for part in str(text).split("/"))
        except ValueError:
            raise ValueError(f"a shard is written 'i/N' (e.g. '0/4'), got {text!r}.") from None
        return cls(index, count)

    def of(self, work: Sequence[U]) -> list[U]:
        """This shard's contiguous block of ``work`` (keeps examples together)."""
        bounds = np.linspace(0, len(work), self.count + 1).round().astype(int)
        return list(work[bounds[self.index] : bounds[self.index + 1]])

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
