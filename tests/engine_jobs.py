"""A tiny study for the engine tests, importable by Ray workers and subprocesses (module-level,
so it pickles by reference): the masks of a tiny head-attribution run as one ordinary stage,
whose unit ``victim`` (if set) signals its process id to ``marker`` and sleeps until someone
kills the process, on its first attempt only."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import ClassVar

import numpy as np

from hooked_vlm.attribution import MaskStore, evaluate_unit, open_store, units
from hooked_vlm.storage import write_atomic
from hooked_vlm.studies import Session, Stage, Study, StudyConfig
from hooked_vlm.testing.attribution_fixtures import tiny_evaluator


@dataclass(frozen=True)
class TinyConfig(StudyConfig):
    """Attributes:
        victim: the unit whose first attempt waits to be killed.
        marker: where that attempt writes its process id.
    """

    STUDY: ClassVar[str] = "tiny-masks"
    STAGES: ClassVar[tuple[str, ...]] = ("masks",)
    NOT_IDENTITY: ClassVar[tuple[str, ...]] = ("stages", "victim", "marker")
    victim: str | None = None
    marker: str = ""
    stages: str | tuple[str | int, ...] | None = None


class TinySession(Session):
    def __init__(self, config: TinyConfig, out_dir: Path, weights: bool = True) -> None:
        super().__init__(config, out_dir)
        self.evaluator = tiny_evaluator()
        self.model = self.evaluator.model

    @cached_property
    def store(self) -> MaskStore:
        return open_store(self.root / "store", self.evaluator)


def _compute(session: TinySession, key: str) -> dict[str, np.ndarray]:
    marker = Path(session.config.marker)
    if key == session.config.victim and not marker.exists():
        write_atomic(marker, str(os.getpid()))
        time.sleep(300)  # killed here, mid-unit
    return evaluate_unit(session.evaluator, key, session.store)


TINY = Study("tiny-masks", TinyConfig, TinySession, (
    Stage("masks", "masks", lambda session: units(session.evaluator), _compute,
          store=lambda session: session.store),))
