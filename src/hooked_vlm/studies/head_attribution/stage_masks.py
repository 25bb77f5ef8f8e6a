"""Stage 1, masks: the target under every random, held-out, reference and leave-one-out mask,
written into the memory-mapped store (``hooked_vlm.attribution``) unit by unit.

A unit is (split, example, chunk of masks); the store's done markers make the stage resumable
and shardable: ``shard="i/N"`` takes block i of N of *all* units (the same block however far
the others got, so a requeued Slurm task redoes only its own missing units). The loop over
units is :func:`fill_store`, the one function a distributed engine replaces:
:class:`OnEngine` runs the units on any :mod:`hooked_vlm.engines` engine, e.g. Ray actors each
holding a :class:`Session` of their own (:class:`MasksJob`) and writing into the same store.

Example:
    >>> work = mask_work(session, shard="0/4")
    >>> fill_store(session, work, on_unit=lambda unit, ran: None)
    >>> OnEngine(RayEngine(address="auto"))(session, work, on_unit=lambda unit, ran: None)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hooked_vlm import engines
from hooked_vlm.attribution import StoreWorker, Unit, parse_shard, run, shard, units
from hooked_vlm.studies.head_attribution.config import HeadAttributionConfig
from hooked_vlm.studies.head_attribution.session import Session
from hooked_vlm.studies.results import ResultsDir, write_atomic
from hooked_vlm.studies.stages import Progress, StageTiming

OnUnit = Callable[[Unit, bool], None]
Engine = Callable[[Session, Sequence[Unit], OnUnit], int]
TITLE = "1. Masks -> store"


def mask_work(session: Session, shard_spec: str | None = None) -> list[Unit]:
    """Every unit of the run, or shard ``"i/N"`` of them (not yet done or not)."""
    work = units(session.evaluator)
    return work if shard_spec is None else shard(work, *parse_shard(shard_spec))


def fill_store(session: Session, work: Sequence[Unit], on_unit: OnUnit) -> int:
    """Evaluate each unit of ``work`` not done yet into the store, in this process; returns
    how many ran. ``on_unit(unit, ran)`` follows every unit."""
    return run(session.evaluator, session.store, work, on_unit)


@dataclass(frozen=True)
class MasksJob:
    """What an engine's worker process builds once: the run's session (model, examples, and
    the store at ``out_dir/store``, reopened), then it evaluates mask units into the store."""

    config: HeadAttributionConfig
    out_dir: str

    def __call__(self) -> StoreWorker:
        session = Session(self.config, self.out_dir)
        return StoreWorker(session.evaluator, session.store)


@dataclass(frozen=True)
class OnEngine:
    """The mask units on ``engine``'s workers (an ``Engine`` of this module, for
    ``run_head_attribution(engine=...)``). Remote workers build sessions of their own
    (:class:`MasksJob`); the local engine uses the caller's."""

    engine: engines.Engine

    def __call__(self, session: Session, work: Sequence[Unit], on_unit: OnUnit) -> int:
        todo = []
        for unit in work:
            if session.store.is_done(unit):
                on_unit(unit, False)
            else:
                todo.append(unit)
        job = (MasksJob(session.config, str(session.root)) if self.engine.remote
               else lambda: StoreWorker(session.evaluator, session.store))
        with self.engine.start(job) as pool:
            return pool.run(todo, on_unit)


def run_masks(
    session: Session, results: ResultsDir, progress: Progress, shard_spec: str | None,
    engine: Engine = fill_store,
) -> tuple[list[tuple[str, str]], StageTiming]:
    """The stage (this shard of it): its missing units, then a headline and the timing."""
    wall = time.perf_counter()
    work = mask_work(session, shard_spec)
    progress.stage("masks", TITLE + (f" (shard {shard_spec})" if shard_spec else ""), len(work))
    evaluated = [0]

    def on_unit(unit: Unit, ran: bool) -> None:
        if ran:
            start, stop = session.store.chunk_range(unit.split, unit.chunk)
            evaluated[0] += stop - start
        progress.advance("masks", unit, ran)

    computed = engine(session, work, on_unit)
    seconds = time.perf_counter() - wall
    timing = _record(results, shard_spec, len(work), computed, seconds)
    everything = len(units(session.evaluator))
    left = len(session.store.missing())
    headline = [("units done (all shards)", f"{everything - left} of {everything}")]
    if computed:
        headline.append(("masks evaluated per second (this session)",
                         f"{evaluated[0] / seconds:.1f} ({evaluated[0]} masks)"))
    return headline, timing


def _record(
    results: ResultsDir, shard_spec: str | None, n_units: int, computed: int, seconds: float
) -> StageTiming:
    """This session's timing, its compute seconds added to earlier sessions' (``timings.json``,
    or a file of the shard's own: shards run at once and never share a file)."""
    if shard_spec is None:
        path, key = results.path("timings.json"), "masks"
    else:
        i, n = parse_shard(shard_spec)
        path, key = results.path(f"timings-masks-shard-{i}-of-{n}.json"), "masks"
    previous = json.loads(path.read_text()) if path.exists() else {}
    before = previous.get(key, {}).get("unit_seconds", 0.0)
    timing = StageTiming(n_units, computed, before + (seconds if computed else 0.0), 0.0, seconds)
    write_atomic(path, json.dumps({**previous, key: vars(timing)}, indent=1))
    return timing
