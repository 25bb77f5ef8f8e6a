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

import json
from pathlib import Path
from typing import Any

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
from hooked_vlm.studies.narrow_gate.stage_flow import FLOW
from hooked_vlm.studies.narrow_gate.stage_knockout import KNOCKOUT, PROGRESSIVE
from hooked_vlm.studies.narrow_gate.stage_patching import PATCHING, STEERING
from hooked_vlm.studies.narrow_gate.stage_representations import GAP, OVERLAP
from hooked_vlm.studies.results import ResultsDir, write_atomic
from hooked_vlm.studies.stages import Progress, Stage, Summary, run_stage
from hooked_vlm.studies.units import UnitStore

STAGE_OBJECTS: dict[str, Stage] = {
    s.name: s for s in (GAP, FLOW, OVERLAP, KNOCKOUT, PROGRESSIVE, PATCHING, STEERING)
}
assert tuple(STAGE_OBJECTS) == STAGES


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
            headline[name], timings[name] = run_stage(
                STAGE_OBJECTS[name], session, results, store, progress
            )
    summary = Summary(results.root, headline, timings, notes)
    summary.report = write_report(results.root)
    return summary


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
