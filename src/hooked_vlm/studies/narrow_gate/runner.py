"""``run_narrow_gate``: every stage's units (resumably), their results, timings and the report.

Results directory::

    config.json              the run's identity (a different config here is an error)
    units/<stage>/...        one .npz + .done.json per finished work unit
    results/<stage>.json     each stage's reduced numbers and headline (+ .npz arrays)
    timings.json             per stage: compute seconds (all sessions) and this session's
    session.json             model and data facts for the report's header
    report.html              the self-contained report (write_report(out_dir) redraws it)

The units run on an engine (:mod:`hooked_vlm.engines`): this process by default, or Ray
workers that each load the model once (this process then loads none of the weights: it lists
units and reduces their arrays). ``shard=(i, n)`` computes block ``i`` of ``n`` of each stage's
units and stops there (a Slurm array task); the same call without ``shard`` afterwards computes
whatever is still missing, reduces every stage and writes the report.

Example:
    >>> config = NarrowGateConfig(model="tiny-native", data="synthetic", n=16)
    >>> summary = run_narrow_gate(config, "results/narrow_gate")
    >>> summary.report
    PosixPath('results/narrow_gate/report.html')
    >>> run_narrow_gate(config, "results/ng", engine=RayEngine(address="auto"))  # on a cluster
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from hooked_vlm.engines import Engine, LocalEngine, Pool
from hooked_vlm.engines import shard as shard_units
from hooked_vlm.studies.common import with_needs
from hooked_vlm.studies.narrow_gate.config import (
    STAGE_NEEDS,
    STAGE_TASKS,
    STAGES,
    ConfigError,
    NarrowGateConfig,
)
from hooked_vlm.studies.narrow_gate.report import write_report
from hooked_vlm.studies.narrow_gate.session import Session
from hooked_vlm.studies.narrow_gate.worker import STAGE_OBJECTS, NarrowGateJob, StudyWorker
from hooked_vlm.studies.results import ResultsDir, write_atomic
from hooked_vlm.studies.stages import Compute, Progress, Stage, StageTiming, Summary, run_stage
from hooked_vlm.studies.units import Unit, UnitStore

assert tuple(STAGE_OBJECTS) == STAGES


def run_narrow_gate(
    config: NarrowGateConfig,
    out_dir: str | Path,
    progress: Progress | None = None,
    engine: Engine | None = None,
    shard: tuple[int, int] | None = None,
) -> Summary:
    """Run (or resume) the study into ``out_dir`` and write its report.

    ``engine``: where units run (default: this process); ``shard=(i, n)``: only block ``i`` of
    ``n`` of each stage's units, no reduction and no report (see the module docstring).
    Raises ``ValueError`` if ``out_dir`` holds a run of a different configuration, and
    :class:`ConfigError` for a stage its data cannot serve when stages are named explicitly.
    ``session.json`` and ``timings.json`` are written as the run goes, so ``write_report``
    can draw the stages finished so far, also of a run that was interrupted.
    """
    progress = progress or Progress()
    engine = engine or LocalEngine()
    results = ResultsDir(out_dir, config.identity())  # refuses a different identity
    store = UnitStore(results.path("units"))
    session = Session(config, weights=not engine.remote)
    stages, notes = _plan(config, session)
    notes.insert(0, session.gate_note)
    for note in notes[1:]:
        progress.note(note)
    write_atomic(results.path("session.json"), json.dumps(
        {**session_info(session), "notes": notes}, indent=1))
    job = (NarrowGateJob(config, str(results.root)) if engine.remote
           else lambda: StudyWorker(session, store))
    headline, timings = {}, {}
    with torch.no_grad(), engine.start(job) as pool:
        for name in stages:
            stage = STAGE_OBJECTS[name]
            if shard is None:
                headline[name], timings[name] = run_stage(
                    stage, session, results, store, progress, _on_pool(pool, stage, store))
            elif _ready(stage, session, store, notes, progress):
                timings[name] = _run_shard(stage, session, store, pool, shard, progress)
    summary = Summary(results.root, headline, timings, notes)
    if shard is None:
        summary.report = write_report(results.root)
    return summary


def _run_shard(
    stage: Stage, session: Session, store: UnitStore, pool: Pool, shard: tuple[int, int],
    progress: Progress,
) -> StageTiming:
    """This shard's block of the stage's units; nothing reduced (other shards' are missing)."""
    wall = time.perf_counter()
    units = shard_units(stage.units(session, store), *shard)
    progress.stage(stage.name, f"{stage.title} (shard {shard[0]}/{shard[1]})", len(units))
    computed = _on_pool(pool, stage, store)(
        units, lambda unit, fresh: progress.advance(stage.name, unit, fresh))
    return StageTiming(len(units), computed, sum(store.seconds(u.key) for u in units),
                       wall_seconds=time.perf_counter() - wall)


def _on_pool(pool: Pool, stage: Stage, store: UnitStore) -> Compute:
    """Runs the units without a done-marker on ``pool``; the others count as skipped."""

    def compute(units: list[Unit], on_unit: Callable[[Unit, bool], None]) -> int:
        by_key = {unit.key: unit for unit in units}
        todo = []
        for unit in units:
            if store.done(unit.key):
                on_unit(unit, False)
            else:
                todo.append((stage.name, unit.key))
        return pool.run(todo, lambda address, fresh: on_unit(by_key[address[1]], fresh))

    return compute


def _ready(
    stage: Stage, session: Session, store: UnitStore, notes: list[str], progress: Progress
) -> bool:
    """Whether every unit of the stages ``stage`` reads is done (under sharding, other shards
    may still be computing them); a note says why not."""
    waiting = [need for need in STAGE_NEEDS.get(stage.name, ())
               if not all(store.done(u.key) for u in STAGE_OBJECTS[need].units(session, store))]
    if waiting:
        note = (f"stage {stage.name!r} reads every unit of {waiting}, which other shards are "
                "still computing: skipped in this shard (the run without --shard computes it, "
                f"or rerun the shards with --stages {stage.name} once those are in)")
        notes.append(note)
        progress.note(note)
    return not waiting


def _plan(config: NarrowGateConfig, session: Session) -> tuple[list[str], list[str]]:
    """Stages to run, in order (dependencies added), and notes on what is skipped."""
    explicit = config.stages is not None
    wanted, notes = with_needs(config.stages or STAGES, STAGE_NEEDS)
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


def session_info(session: Session) -> dict[str, Any]:
    """What the report's header says about the model and data."""
    model, config = session.model, session.config
    return {
        "model": config.model, "model_config": model.model_config.name,
        "architecture": model.cfg.architecture,
        "native": model.cfg.native, "n_layers": model.cfg.n_layers,
        "d_model": model.cfg.d_model, "gate": session.gate, "gate_note": session.gate_note,
        "data": {task: config.data[task] for task in config.data}, "n": config.n,
        "device": session.device, "dtype": str(model.dtype).removeprefix("torch."),
    }
