"""The Narrow Gate study on any engine: a worker holds a session and runs units by address.

A unit's address is ``(stage, key)``, e.g. ``("knockout", "knockout/caption/zero/0003")``: small
and picklable, unlike the unit itself (a closure over a loaded session). A worker lists a
stage's units once, from its own session, and runs the one named; the runner hands addresses
to the engine stage by stage (a stage may read the units of an earlier one: steering reads the
overlap stage's gate residuals).

Example:
    >>> worker = NarrowGateJob(config, "results/ng")()      # loads the model: once per worker
    >>> worker(("gap", "gap/0000"))                          # True: computed, False: was done
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from hooked_vlm.studies.narrow_gate.config import NarrowGateConfig
from hooked_vlm.studies.narrow_gate.session import Session
from hooked_vlm.studies.narrow_gate.stage_flow import FLOW
from hooked_vlm.studies.narrow_gate.stage_knockout import KNOCKOUT, PROGRESSIVE
from hooked_vlm.studies.narrow_gate.stage_patching import PATCHING, STEERING
from hooked_vlm.studies.narrow_gate.stage_representations import GAP, OVERLAP
from hooked_vlm.studies.stages import Stage
from hooked_vlm.studies.units import Unit, UnitStore, run_units

STAGE_OBJECTS: dict[str, Stage] = {
    s.name: s for s in (GAP, FLOW, OVERLAP, KNOCKOUT, PROGRESSIVE, PATCHING, STEERING)
}
Address = tuple[str, str]  # (stage name, unit key)


@dataclass
class StudyWorker:
    """A session and the run's unit store; ``worker((stage, key))`` runs that unit if needed."""

    session: Session
    store: UnitStore
    _units: dict[str, dict[str, Unit]] = field(default_factory=dict)

    def __call__(self, address: Address) -> bool:
        stage, key = address
        if stage not in self._units:
            units = STAGE_OBJECTS[stage].units(self.session, self.store)
            self._units[stage] = {unit.key: unit for unit in units}
        with torch.no_grad():
            computed, _ = run_units(self.store, [self._units[stage][key]])
        return computed == 1


@dataclass(frozen=True)
class NarrowGateJob:
    """What a worker process builds once: the session of ``config`` over ``out_dir``'s units."""

    config: NarrowGateConfig
    out_dir: str

    def __call__(self) -> StudyWorker:
        return StudyWorker(Session(self.config), UnitStore(Path(self.out_dir) / "units"))
