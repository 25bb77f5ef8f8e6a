"""What every engine shares: the job / worker / pool protocols and sharding by index.

Example:
    >>> shard(list(range(10)), 1, 3)          # task 1 of a 3-task Slurm array
    [3, 4, 5, 6]
    >>> parse_shard("1/3")
    (1, 3)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

import numpy as np

U = TypeVar("U")
OnUnit = Callable[[Any, bool], None]  # (unit, computed): called as each unit completes


class EngineError(RuntimeError):
    """An engine could not start its workers or finish its units."""


class Worker(Protocol):
    """One worker's session: ``worker(unit)`` computes ``unit`` into the shared store unless it
    is done already, and says whether it computed it. Must be idempotent: a unit may run twice
    (a retried unit whose first worker died after writing it)."""

    def __call__(self, unit: Any) -> bool: ...


# Run once per worker process; builds the session (model, examples, store). Picklable for
# engines whose workers live in other processes (a dataclass or functools.partial of
# module-level functions; Ray's cloudpickle also takes closures).
Job = Callable[[], Worker]


class Pool(Protocol):
    """Started workers, each holding its session; ``run`` may be called any number of times."""

    workers: int

    def run(self, units: Sequence[Any], on_unit: OnUnit | None = None) -> int:
        """Compute ``units`` (any order, each once); returns how many were computed."""
        ...


class Engine(Protocol):
    """Starts workers for a job. ``remote``: workers live in other processes, so the job is
    pickled and the caller needs no model of its own."""

    remote: bool

    def start(self, job: Job) -> AbstractContextManager[Pool]: ...


def shard(work: Sequence[U], index: int, count: int) -> list[U]:
    """Shard ``index`` of ``count``: a contiguous block of ``work`` (keeps examples together).

    Shard the *whole* list of a run's units, never the units still missing: every task of an
    array must cut the same list, whatever the others have finished when it starts.

    Example:
        >>> shard(units, 2, 8)       # Slurm: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT
    """
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: need 0 <= index < count.")
    bounds = np.linspace(0, len(work), count + 1).round().astype(int)
    return list(work[bounds[index] : bounds[index + 1]])


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` -> ``(i, N)``.

    Example:
        >>> parse_shard("0/4")
        (0, 4)
    """
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"a shard is written 'i/N' (e.g. '0/4'), got {text!r}.") from None
    shard([], index, count)  # validates
    return index, count
