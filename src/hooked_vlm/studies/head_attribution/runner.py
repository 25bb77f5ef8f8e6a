"""``run_head_attribution``: the mask store (resumably, by shard), then every stage after it,
their results, timings and the report.

Results directory::

    config.json              the run's identity (a different config here is an error)
    store/                   the mask store: targets by mask index, done markers, baseline stats
    units/<stage>/...        one .npz + .done.json per finished work unit of the later stages
    results/<stage>.json     each stage's reduced numbers and headline (+ .npz arrays)
    timings.json             per stage: compute seconds (all sessions) and this session's
    timings-masks-shard-*    the same for the masks of each shard
    session.json             model, data and example facts for the report's header
    report.html              the self-contained report (write_report(out_dir) redraws it)

Three ways to run: everything in one process (default); ``shard="i/N"``: only block i of N of
the mask units (a Slurm array task; no fit, no report); ``fit_only=True``: every stage after
the masks, once all shards are in (the store must be complete).

Example:
    >>> config = HeadAttributionConfig(model="tiny-llava", data="synthetic", n=4, masks=256)
    >>> summary = run_head_attribution(config, "results/ha")     # resumes if killed
    >>> summary.report
    PosixPath('results/ha/report.html')
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from hooked_vlm.studies.common import ConfigError, with_needs
from hooked_vlm.studies.head_attribution.config import STAGE_NEEDS, STAGES, HeadAttributionConfig
from hooked_vlm.studies.head_attribution.report import write_report
from hooked_vlm.studies.head_attribution.session import Session
from hooked_vlm.studies.head_attribution.stage_baselines import BASELINES
from hooked_vlm.studies.head_attribution.stage_consistency import CONSISTENCY
from hooked_vlm.studies.head_attribution.stage_curves import CURVES
from hooked_vlm.studies.head_attribution.stage_fit import FIT
from hooked_vlm.studies.head_attribution.stage_masks import Engine, fill_store, run_masks
from hooked_vlm.studies.head_attribution.stage_tokens import TOKENS
from hooked_vlm.studies.results import ResultsDir, write_atomic
from hooked_vlm.studies.stages import Progress, Stage, Summary, run_stage
from hooked_vlm.studies.units import UnitStore

STAGE_OBJECTS: dict[str, Stage] = {s.name: s for s in (FIT, BASELINES, CURVES, TOKENS,
                                                      CONSISTENCY)}
assert ("masks", *STAGE_OBJECTS) == STAGES


def run_head_attribution(
    config: HeadAttributionConfig,
    out_dir: str | Path,
    progress: Progress | None = None,
    *,
    shard: str | None = None,
    fit_only: bool = False,
    engine: Engine = fill_store,
) -> Summary:
    """Run (or resume) the study into ``out_dir``; see the module docstring for ``shard``
    and ``fit_only``. ``engine`` evaluates the mask units (default: in this process).

    Raises ``ValueError`` if ``out_dir`` holds a run of a different configuration, and
    :class:`ConfigError` for a fit asked for before every mask unit is done.
    """
    if shard is not None and fit_only:
        raise ConfigError("shard and fit_only exclude each other: shards fill the store, then "
                          "one fit_only run fits and reports")
    progress = progress or Progress()
    results = ResultsDir(out_dir, config.identity())  # refuses a different identity
    session = Session(config, results.root)
    stages, notes = _plan(config, shard, fit_only)
    for note in notes:
        progress.note(note)
    if shard is None:  # shards run at once: one session.json, from the process that reports
        write_atomic(results.path("session.json"), json.dumps(
            {**session.info(), "notes": notes}, indent=1))
    if "masks" not in stages:
        _require_complete(session)
    headline, timings = {}, {}
    store = UnitStore(results.path("units"))
    with torch.no_grad():
        for name in stages:
            if name == "masks":
                headline[name], timings[name] = run_masks(session, results, progress, shard,
                                                          engine)
            else:
                headline[name], timings[name] = run_stage(
                    STAGE_OBJECTS[name], session, results, store, progress)
    summary = Summary(results.root, headline, timings, notes)
    if shard is None:
        summary.report = write_report(results.root)
    return summary


def _plan(
    config: HeadAttributionConfig, shard: str | None, fit_only: bool
) -> tuple[list[str], list[str]]:
    """Stages to run now, in order (dependencies added), and notes saying why."""
    if shard is not None:
        return ["masks"], [f"shard {shard}: filling its part of the mask store only; fit and "
                           "report with fit_only (--fit-only) once every shard is done"]
    wanted, notes = with_needs(config.stages or STAGES, STAGE_NEEDS)
    if fit_only:
        wanted = [name for name in wanted if name != "masks"]
    return [name for name in STAGES if name in wanted], notes


def _require_complete(session: Session) -> None:
    missing = session.store.missing()
    if missing:
        raise ConfigError(
            f"{len(missing)} mask unit(s) of the store at {session.store.path} are not done "
            f"(first: {missing[0]}): let every shard finish, or run without fit_only / "
            "--fit-only to compute them here."
        )
