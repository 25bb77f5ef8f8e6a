"""``run_study``: one runner for every study, on any engine, whole or as a shard.

The steps, for any :class:`~hooked_vlm.studies.Study`:

1. **plan**: open the session (model, data; everything is validated, nothing is written),
   choose the stages (``config.stages`` and the stages they need);
2. **identity**: start the engine's workers (each holding a session of its own on a remote
   engine), take the weights' fingerprint from them, and claim the results directory for the
   config + fingerprints (:func:`~hooked_vlm.studies.results.claim`);
3. for each stage: its keys (only shard ``i/N``'s block of them under ``shard``), skip those
   done, hand the rest to the engine (a picklable :class:`StudyJob` builds each remote worker's
   session; units travel as ``(stage, key)``), then reduce the finished units into the stage's
   typed result (stored once, read back on later runs);
4. **report**: the study's HTML page from the results.

Results directory::

    config.json              the identity (config + fingerprints; another one here is refused)
    units/<key>.npz          each finished unit's arrays, with <key>.done.json (checksum, seconds)
    results/<stage>.json     each stage's reduced numbers and headline (+ .npz arrays)
    timings.json             per stage: compute seconds (all sessions) and this session's
    timings-shard-i-of-N.json  the same for each shard's own block
    session.json             model and data facts and notes, for the report's header
    report.html              the self-contained report (the study's report(out_dir) redraws it)

A shard computes its block of every stage whose needs are finished and reduces nothing; the
run without a shard afterwards computes whatever is still missing, reduces and reports.

Example:
    >>> summary = run_study(NARROW_GATE, NarrowGateConfig(model="tiny-native", data="synthetic",
    ...                     n=16), "results/ng")                      # resumes if killed
    >>> run_study(NARROW_GATE, config, "results/ng", shard=Shard(0, 4))   # a Slurm array task
    >>> run_study(NARROW_GATE, config, "results/ng", engine=RayEngine(address="auto"))
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hooked_vlm.engines import Engine, EngineError, LocalEngine, Pool, Shard
from hooked_vlm.settings import ConfigError
from hooked_vlm.storage import write_atomic
from hooked_vlm.studies.results import claim, read_json
from hooked_vlm.studies.study import Result, Stage, Study


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
    """What a run produced: per-stage headline rows, timings, notes and the report's path
    (None for a shard: no stage is reduced there)."""

    out_dir: Path
    headline: dict[str, list[tuple[str, str]]]
    timings: dict[str, StageTiming]
    notes: list[str] = field(default_factory=list)
    report: Path | None = None


class Progress:
    """Callbacks a runner reports to (a rich progress bar in the CLI); all optional."""

    def stage(self, name: str, title: str, total: int) -> None: ...
    def advance(self, name: str, key: str, computed: bool) -> None: ...
    def note(self, text: str) -> None: ...


# ---------------------------------------------------------------------- workers


@dataclass
class StudyWorker:
    """A session of ``study``; ``worker((stage, key))`` computes that unit unless it is done
    (an engine's ``Worker``)."""

    study: Study
    session: Any

    @property
    def fingerprint(self) -> Any:
        return self.session.fingerprint()

    def __call__(self, address: tuple[str, str]) -> bool:
        name, key = address
        stage = self.study.stage(name)
        store = stage.store_of(self.session)
        if store.done(key):
            return False
        start = time.perf_counter()
        with torch.set_grad_enabled(stage.gradients):
            arrays = stage.compute(self.session, key)  # type: ignore[misc]
        store.save(key, arrays, time.perf_counter() - start)
        return True


@dataclass(frozen=True)
class StudyJob:
    """What a remote worker process builds once: the session of ``config`` over ``out_dir``
    (picklable: Ray actors receive it)."""

    study: Study
    config: Any
    out_dir: str

    def __call__(self) -> StudyWorker:
        return StudyWorker(self.study, self.study.session(self.config, Path(self.out_dir), True))


# ---------------------------------------------------------------------- the runner


def run_study(
    study: Study,
    config: Any,
    out_dir: str | Path,
    engine: Engine | None = None,
    shard: Shard | str | None = None,
    progress: Progress | None = None,
) -> Summary:
    """Run (or resume) ``study`` with ``config`` into ``out_dir`` (see the module docstring).

    ``engine``: where units run (default: this process); ``shard``: only block ``i`` of ``n``
    of each stage's units (``Shard`` or ``"i/N"``), nothing reduced, no report.

    Raises :class:`~hooked_vlm.settings.ConfigError` for a config the model or data cannot
    serve and for a directory that holds another run, before anything is written.
    """
    if not isinstance(config, study.config):
        raise ConfigError(f"study {study.name!r} takes a {study.config.__name__}, got "
                          f"{type(config).__name__}")
    shard = Shard.parse(shard) if isinstance(shard, str) else shard
    engine = engine or LocalEngine()
    progress = progress or Progress()
    root = Path(out_dir)
    session = study.session(config, root, not engine.remote)
    stages, notes = study.plan(session, config.stages)
    notes = [*getattr(session, "notes", []), *notes]
    job = (StudyJob(study, config, str(root)) if engine.remote
           else lambda: StudyWorker(study, session))
    headline: dict[str, list[tuple[str, str]]] = {}
    timings: dict[str, StageTiming] = {}
    with engine.start(job) as pool, claim(root, _identity(config, session, pool)):
        for note in notes:
            progress.note(note)
        if shard is None:
            write_atomic(root / "session.json",
                         json.dumps({**session.info(), "notes": notes}, indent=1))
        for name in stages:
            stage = study.stage(name)
            if shard is not None and not _ready(study, stage, session, root):
                note = (f"stage {name!r} reads {list(stage.needs)}, which other shards are "
                        "still computing: skipped in this shard (the run without --shard "
                        "computes it)")
                notes.append(note)
                progress.note(note)
                continue
            headline[name], timings[name] = _run_stage(stage, session, root, pool, shard,
                                                       progress)
            _write_timing(root, shard, name, timings[name])
    summary = Summary(root, headline, timings, notes)
    if shard is None and study.report is not None:
        summary.report = study.report(root)
    return summary


def _identity(config: Any, session: Any, pool: Pool) -> dict[str, Any]:
    """The config's identity and the fingerprint of what computes it: the session's own, or
    (a session without weights) the workers', which must agree."""
    mine = session.fingerprint()
    theirs = [f for f in pool.fingerprints if f is not None]
    if any(f != theirs[0] for f in theirs):
        raise EngineError("the workers loaded different weights or processors (fingerprints "
                          f"{theirs}): every worker must see the same checkpoint")
    if theirs and mine.get("weights") is None:
        mine = {**mine, "weights": theirs[0]["weights"]}
        session.fingerprint_from(mine)
    return {**config.identity(), "fingerprint": mine}


def _ready(study: Study, stage: Stage, session: Any, root: Path) -> bool:
    """Whether every stage ``stage`` reads (and the session runs) is finished: all its units
    done and, where it reduces, its result stored (a shard reduces nothing itself)."""
    for name in stage.needs:
        need = study.stage(name)
        if need.skip is not None and need.skip(session) is not None:
            continue  # left out for this session: nothing to wait for
        store = need.store_of(session)
        if not all(store.done(k) for k in need.keys(session)):
            return False
        if need.result is not None and not (root / "results" / f"{name}.json").exists():
            return False
    return True


def _run_stage(
    stage: Stage, session: Any, root: Path, pool: Pool, shard: Shard | None, progress: Progress
) -> tuple[list[tuple[str, str]], StageTiming]:
    """The stage's missing units (this shard's block of them), then its reduction."""
    wall = time.perf_counter()
    keys = stage.keys(session)
    mine = keys if shard is None else shard.of(keys)
    store = stage.store_of(session)
    progress.stage(stage.name, stage.title + (f" (shard {shard})" if shard else ""), len(mine))
    done = {key for key in keys if store.done(key)}  # a damaged unit is not done: redone
    todo = [(stage.name, key) for key in mine if key not in done]
    for key in mine:
        if key in done:
            progress.advance(stage.name, key, False)
    computed = pool.run(todo, lambda a, fresh: progress.advance(stage.name, a[1], fresh)) \
        if todo else 0
    done |= {key for _, key in todo if store.done(key)}
    unit_seconds = sum(store.seconds(k) for k in mine)
    rows = [("units done", f"{len(done)} of {len(keys)}")]
    reduce_seconds = 0.0
    if shard is None and stage.reduce is not None:
        missing = [k for k in keys if k not in done]
        if missing:
            raise EngineError(f"stage {stage.name!r}: {len(missing)} unit(s) are still not done "
                              f"after the run (first: {missing[0]})")
        result, reduce_seconds = reduced(stage, session, root, store)
        rows = result.headline()
    timing = StageTiming(len(mine), computed, unit_seconds, reduce_seconds,
                         time.perf_counter() - wall)
    return rows, timing


def reduced(stage: Stage, session: Any, root: Path, store: Any) -> tuple[Result, float]:
    """The stage's result: reduced once (``results/<stage>.json``), then read back."""
    assert stage.result is not None and stage.reduce is not None
    saved = read_json(root / "results" / f"{stage.name}.json")
    if saved is not None:
        return stage.result.load(root), saved["seconds"]  # type: ignore[return-value]
    start = time.perf_counter()
    with torch.set_grad_enabled(stage.gradients):
        result = stage.reduce(session, store)
    seconds = time.perf_counter() - start
    result.save(root, stage.title, seconds)
    return result, seconds


def _write_timing(root: Path, shard: Shard | None, name: str, timing: StageTiming) -> None:
    """Add (or replace) stage ``name``'s entry of ``timings.json`` (a shard's own file)."""
    path = root / ("timings.json" if shard is None
                   else f"timings-shard-{shard.index}-of-{shard.count}.json")
    write_atomic(path, json.dumps({**read_json(path, {}), name: vars(timing)}, indent=1))

