"""A rich progress bar that advances as units complete (any engine's ``on_unit``).

Example:
    >>> with progress_bar(len(todo), "head masks") as on_unit:
    ...     pool.run(todo, on_unit)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from hooked_vlm.engines.base import OnUnit


@contextmanager
def progress_bar(total: int, description: str) -> Iterator[OnUnit]:
    """A bar of ``total`` units: done / total, elapsed and remaining time."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn()) as bars:
        task = bars.add_task(description, total=total)
        yield lambda unit, computed: bars.advance(task)
