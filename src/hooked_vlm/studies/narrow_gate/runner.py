"""``run_narrow_gate``: every stage's units (resumably), their results, timings and the report.

Results directory::

    config.json              the run's identity (a different config here is an error)
    units/<stage>/...        one .npz + .done.json per finished work unit
    results/<stage>.json     each stage's reduced numbers and headline (+ .npz arrays)
    timings.json             per stage: compute seconds (all sessions) and this session's
    session.json             model and data facts for the report's header
    report.html              the self-contained report (write_report(out_dir) redraws it)

Example:
    >>> config = NarrowGateConfig(model="tiny-native", data="synthetic", n=16)
    >>> summary = run_narrow_gate(config, "results/narrow_gate")
    >>> summary.report
    PosixPath('results/narrow_gate/report.html')
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hooked_vlm.studies.narrow_gate.config import (
    STAGE_NEEDS,
    STAGE_TASKS,
    STAGES,
    ConfigError,
    NarrowGateConfig,
)
from hooked_vlm.studies.narrow_gate.report import write_report
from hooked_vlm.studies.narrow_gate.session import Session
from hooked_vlm.studies.narrow_gate.stage import Reduced, Stage
from hooked_vlm.studies.narrow_gate.stage_flow import FLOW
from hooked_vlm.studies.narrow_gate.stage_knockout import KNOCKOUT, PROGRESSIVE
from hooked_vlm.studies.narrow_gate.stage_patching import PATCHING, STEERING
from hooked_vlm.studies.narrow_gate.stage_representations import GAP, OVERLAP
from hooked_vlm.studies.results import ResultsDir, write_atomic
from hooked_vlm.studies.units import Unit, UnitStore, run_units

STAGE_OBJECTS: dict[str, Stage] = {
    s.name: s for s in (GAP, FLOW, OVERLAP, KNOCKOUT, PROGRESSIVE, PATCHING, STEERING)
}
assert tuple(STAGE_OBJECTS) == STAGES


@dataclass
class StageTiming:
    """Compute seconds of a stage's units (every session) and this session's wall time."""

    units: int
    computed: int
    unit_seconds: float
    reduce_seconds: float = 0.0
    wall_seconds: float = 0.0


@dataclass
class Summary:
    """What a run produced: per-stage headline rows, timings, notes and the report's path."""

    out_dir: Path
    headline: dict[str, list[tuple[str, str]]]
    timings: dict[str, StageTiming]
    notes: list[str] = field(default_factory=list)
    report: Path | None = None


class Progress:
    """Callbacks the runner reports to (a rich progress bar in the CLI); all optional."""

    def stage(self, name: str, title: str, total: int) -> None: ...
    def advance(self, name: str, unit: Unit, computed: bool) -> None: ...
    def note(self, text: str) -> None: ...


def run_narrow_gate(
    config: NarrowGateConfig, out_dir: str | Path, progress: Progress | None = None
) -> Summary:
    """Run (or resume) the study into ``out_dir`` and write its report.

    Raises ``ValueError`` if ``out_dir`` holds a run of a different configuration, and
    :class:`ConfigError` for a stage its data cannot serve when stages are named explicitly.
    ``session.json`` and ``timings.json`` are written as the run goes, so ``write_report``
    can draw the stages finished so far, also of a run that was interrupted.
    """
    progress = progress or Progress()
    results = ResultsDir(out_dir, config.identity())  # refuses a different identity
    store = UnitStore(results.path("units"))
    session = Session(config)
    stages, notes = _plan(config, session)
    notes.insert(0, session.gate_note)
    for note in notes[1:]:
        progress.note(note)
    write_atomic(results.path("session.json"), json.dumps(
        {**session_info(session), "notes": notes}, indent=1))
    headline, timings = {}, {}
    with torch.no_grad():
        for name in stages:
            headline[name], timings[name] = _run_stage(
                STAGE_OBJECTS[name], session, results, store, progress
            )
    summary = Summary(results.root, headline, timings, notes)
    summary.report = write_report(results.root)
    return summary


def _run_stage(
    stage: Stage, session: Session, results: ResultsDir, store: UnitStore, progress: Progress
) -> tuple[list[tuple[str, str]], StageTiming]:
    """The stage's missing units, then its reduction: ``(headline, timing)``."""
    wall = time.perf_counter()
    units = stage.units(session, store)
    progress.stage(stage.name, stage.title, len(units))
    computed, _ = run_units(store, units, lambda u, c: progress.advance(stage.name, u, c))
    reduced, reduce_seconds = _reduced(results, stage, session, store)
    timing = StageTiming(
        len(units), computed, sum(store.seconds(u.key) for u in units), reduce_seconds,
        time.perf_counter() - wall,
    )
    _write_timings(results, stage.name, timing)
    return reduced.headline, timing


def _plan(config: NarrowGateConfig, session: Session) -> tuple[list[str], list[str]]:
    """Stages to run, in order (dependencies added), and notes on what is skipped."""
    explicit = config.stages is not None
    wanted = list(config.stages or STAGES)
    notes = []
    for name in list(wanted):
        for need in STAGE_NEEDS.get(name, ()):
            if need not in wanted:
                wanted.append(need)
                notes.append(f"stage {name!r} needs {need!r}: running it too")
    runnable = []
    for name in wanted:  # those asked for first, so an error names the stage asked for
        tasks = STAGE_TASKS[name]
        have = [t for t in tasks if session.has_task(t)]
        if (name == "knockout" and have) or len(have) == len(tasks):
            runnable.append(name)
            continue
        message = f"stage {name!r} needs data for {' and '.join(tasks)}; none configured"
        if explicit:
            raise ConfigError(message + " (see the data field of the config)")
        notes.append(message + ": skipped")
    runnable = [name for name in STAGES if name in runnable]
    return runnable, notes


def _reduced(
    results: ResultsDir, stage: Stage, session: Session, store: UnitStore
) -> tuple[Reduced, float]:
    """The stage's reduction: computed once, then read back (``results/<stage>.json``)."""
    path = results.path(f"results/{stage.name}.json")
    if path.exists():
        saved = json.loads(path.read_text())
        return Reduced(saved["values"], [tuple(h) for h in saved["headline"]]), saved["seconds"]
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    reduced = stage.reduce(session, store)
    seconds = time.perf_counter() - start
    if reduced.arrays:
        buffer = io.BytesIO()
        np.savez(buffer, **reduced.arrays)
        write_atomic(results.path(f"results/{stage.name}.npz"), buffer.getvalue())
    record = {"stage": stage.name, "title": stage.title, "values": reduced.values,
              "headline": reduced.headline, "seconds": seconds}
    write_atomic(path, json.dumps(record, indent=1))  # last: it marks the reduction done
    return reduced, seconds


def _write_timings(results: ResultsDir, name: str, timing: StageTiming) -> None:
    path = results.path("timings.json")
    previous = json.loads(path.read_text()) if path.exists() else {}
    write_atomic(path, json.dumps({**previous, name: vars(timing)}, indent=1))


def session_info(session: Session) -> dict[str, Any]:
    """What the report's header says about the model and data."""
    model, config = session.model, session.config
    return {
        "model": config.model, "model_config": model.model_config.name,
        "architecture": model.cfg.architecture,
        "native": model.cfg.native, "n_layers": model.cfg.n_layers,
        "d_model": model.cfg.d_model, "gate": session.gate, "gate_note": session.gate_note,
        "data": {task: config.data[task] for task in config.data}, "n": config.n,
        "device": str(model.device), "dtype": str(model.dtype).removeprefix("torch."),
    }
