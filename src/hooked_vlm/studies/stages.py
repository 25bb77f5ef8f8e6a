"""What a study's stage is, and running one: its work units (resumably), then its reduction.

A stage lists :class:`~hooked_vlm.studies.units.Unit` s (pure functions of the config and an
index) and reduces their arrays into results. :func:`run_stage` computes the missing units,
then the reduction, which it stores once as ``results/<stage>.json`` (small numbers, headline)
and ``results/<stage>.npz`` (arrays) and reads back on later runs; the time each stage took is
kept in ``timings.json``. Every study (Narrow Gate, head attribution) runs its stages this way.

Example:
    >>> stage = Stage("gap", "1. Modality gap", units_fn, reduce_fn)
    >>> headline, timing = run_stage(stage, session, ResultsDir(out, identity),
    ...                              UnitStore(out / "units"), Progress())
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hooked_vlm.studies.results import ResultsDir, write_atomic
from hooked_vlm.studies.units import Unit, UnitStore, run_units


@dataclass
class Reduced:
    """A stage's results: JSON-ready ``values``, ``arrays`` and a few headline figures."""

    values: dict[str, Any]
    headline: list[tuple[str, str]]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    """One analysis of a study: units (pure, by index) and their reduction; both take the
    study's session (its loaded model and data) and the unit store."""

    name: str
    title: str
    units: Callable[[Any, UnitStore], list[Unit]]
    reduce: Callable[[Any, UnitStore], Reduced]


# Computes the units that have no done-marker, calls ``on_unit(unit, computed)`` for each of
# ``units`` and returns how many it computed.
Compute = Callable[[list[Unit], Callable[[Unit, bool], None]], int]


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
    def advance(self, name: str, unit: Any, computed: bool) -> None: ...
    def note(self, text: str) -> None: ...


def stacked(
    store: UnitStore, units: Sequence[Unit | str], name: str, axis: int = 0
) -> np.ndarray:
    """Array ``name`` of every unit (or unit key), concatenated along ``axis``, in order."""
    keys = [u if isinstance(u, str) else u.key for u in units]
    return np.concatenate([store.load(key)[name] for key in keys], axis=axis)


def run_stage(
    stage: Stage,
    session: Any,
    results: ResultsDir,
    store: UnitStore,
    progress: Progress,
    compute: Compute | None = None,
) -> tuple[list[tuple[str, str]], StageTiming]:
    """The stage's missing units, then its reduction: ``(headline, timing)``.

    ``compute`` runs the units (default: :func:`run_units` in this process; the Narrow Gate
    hands them to an engine's workers instead).
    """
    wall = time.perf_counter()
    units = stage.units(session, store)
    progress.stage(stage.name, stage.title, len(units))
    compute = compute or (lambda todo, on_unit: run_units(store, todo, on_unit)[0])
    computed = compute(units, lambda u, c: progress.advance(stage.name, u, c))
    result, reduce_seconds = reduced(results, stage, session, store)
    timing = StageTiming(
        len(units), computed, sum(store.seconds(u.key) for u in units), reduce_seconds,
        time.perf_counter() - wall,
    )
    write_timings(results, stage.name, timing)
    return result.headline, timing


def reduced(
    results: ResultsDir, stage: Stage, session: Any, store: UnitStore
) -> tuple[Reduced, float]:
    """The stage's reduction: computed once, then read back (``results/<stage>.json``)."""
    path = results.path(f"results/{stage.name}.json")
    if path.exists():
        saved = json.loads(path.read_text())
        return Reduced(saved["values"], [tuple(h) for h in saved["headline"]]), saved["seconds"]
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = stage.reduce(session, store)
    seconds = time.perf_counter() - start
    if result.arrays:
        buffer = io.BytesIO()
        np.savez(buffer, **result.arrays)
        write_atomic(results.path(f"results/{stage.name}.npz"), buffer.getvalue())
    record = {"stage": stage.name, "title": stage.title, "values": result.values,
              "headline": result.headline, "seconds": seconds}
    write_atomic(path, json.dumps(record, indent=1))  # last: it marks the reduction done
    return result, seconds


def write_timings(results: ResultsDir, name: str, timing: StageTiming) -> None:
    """Add (or replace) stage ``name``'s entry of ``timings.json``."""
    path = results.path("timings.json")
    previous = json.loads(path.read_text()) if path.exists() else {}
    write_atomic(path, json.dumps({**previous, name: vars(timing)}, indent=1))


def load_results(root: Path, name: str) -> tuple[dict[str, Any], dict[str, Any], dict]:
    """``(record, values, arrays)`` of stage ``name``'s stored reduction (for reports)."""
    record = json.loads((root / "results" / f"{name}.json").read_text())
    path = root / "results" / f"{name}.npz"
    arrays = dict(np.load(path, allow_pickle=False)) if path.exists() else {}
    return record, record["values"], arrays
