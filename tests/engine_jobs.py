"""Jobs for the engine tests, importable by Ray workers and subprocesses (module-level, so
they pickle by reference): a tiny head-attribution run, and one whose worker is killed once."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from hooked_vlm.attribution import AttributionJob, Unit
from hooked_vlm.studies.results import write_atomic
from hooked_vlm.testing.attribution_fixtures import tiny_evaluator


def tiny_job(store: str | os.PathLike) -> AttributionJob:
    """The tiny run (3 examples, 15 units) into ``store``."""
    return AttributionJob(partial(tiny_evaluator), str(store))


@dataclass(frozen=True)
class KilledOnce(AttributionJob):
    """The tiny job, except that the first attempt at ``victim`` writes its process id to
    ``marker`` and sleeps until someone kills the process."""

    victim: Unit | None = None
    marker: str = ""

    def __call__(self):
        return partial(_signal_then_run, super().__call__(), self.victim, self.marker)


def _signal_then_run(worker, victim: Unit, marker: str, unit: Unit) -> bool:
    if unit == victim and not Path(marker).exists():
        write_atomic(Path(marker), str(os.getpid()))
        time.sleep(300)  # killed here, mid-unit
    return worker(unit)
