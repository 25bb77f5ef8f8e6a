"""Work addressed by index: each unit's arrays in one ``.npz``, then a done-marker.

A study is a list of :class:`Unit` s, each a pure function of (config, seed, index) that returns
named arrays. :func:`run_units` computes the units whose marker is missing and skips the rest,
so a killed run (even SIGKILL) resumes where it stopped: a unit killed before its marker was
written is simply computed again, and its arrays are overwritten whole (atomic writes). Units
never depend on the order in which they ran, so they can also be spread over processes.

Layout on disk: ``<root>/<key>.npz`` (``numpy.savez``, read back with ``allow_pickle=False``:
numbers and fixed-width strings only, never pickle) and ``<root>/<key>.done.json`` (when it
finished, how long it took).

Example:
    >>> store = UnitStore("results/run/units")
    >>> units = [Unit(f"gap/{j:04d}", lambda j=j: {"x": np.arange(j)}) for j in range(3)]
    >>> run_units(store, units)          # computes 3 units; a second call computes none
    >>> store.load("gap/0002")["x"]
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hooked_vlm.studies.results import write_atomic

_KEY = re.compile(r"^[A-Za-z0-9_.=+-]+(/[A-Za-z0-9_.=+-]+)*$")
Arrays = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Unit:
    """One piece of work: ``fn()`` returns its arrays; ``key`` says where they are stored."""

    key: str
    fn: Callable[[], Arrays]


class UnitStore:
    """Arrays of finished units under ``root``, one ``.npz`` and one done-marker per unit."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, key: str, suffix: str) -> Path:
        if not _KEY.match(key) or ".." in key.split("/"):
            raise ValueError(
                f"unit key {key!r}: use path-like keys of letters, digits and _.=+- separated "
                "by '/', e.g. 'knockout/caption/zero-eoi/0003'"
            )
        return self.root / f"{key}{suffix}"

    def done(self, key: str) -> bool:
        return self._path(key, ".done.json").exists()

    def save(self, key: str, arrays: Arrays, seconds: float) -> None:
        """Write the arrays, then the done-marker (both atomically)."""
        path = self._path(key, ".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, **{name: _storable(name, a) for name, a in arrays.items()})
        write_atomic(path, buffer.getvalue())
        marker = {"key": key, "seconds": seconds, "finished": time.time()}
        write_atomic(self._path(key, ".done.json"), json.dumps(marker))

    def load(self, key: str) -> dict[str, np.ndarray]:
        if not self.done(key):
            raise FileNotFoundError(
                f"unit {key!r} has not finished (no done-marker under {self.root})"
            )
        with np.load(self._path(key, ".npz"), allow_pickle=False) as data:
            return {name: data[name] for name in data.files}

    def seconds(self, key: str) -> float:
        """How long the unit took when it was computed."""
        return float(json.loads(self._path(key, ".done.json").read_text())["seconds"])


def _storable(name: str, array: object) -> np.ndarray:
    out = np.asarray(array)
    if out.dtype == object:
        raise TypeError(
            f"array {name!r} has dtype object, which only pickle can store: give numbers, or "
            "strings as a fixed-width array (np.array(list_of_str))"
        )
    return out


def run_units(
    store: UnitStore,
    units: Iterable[Unit],
    on_unit: Callable[[Unit, bool], None] | None = None,
) -> tuple[int, int]:
    """Compute every unit without a done-marker; ``(computed, skipped)``.

    ``on_unit(unit, computed)`` is called after each unit (a progress bar, say).
    """
    computed = skipped = 0
    for unit in units:
        fresh = not store.done(unit.key)
        if fresh:
            start = time.perf_counter()
            arrays = unit.fn()
            store.save(unit.key, arrays, time.perf_counter() - start)
        computed, skipped = computed + fresh, skipped + (not fresh)
        if on_unit is not None:
            on_unit(unit, fresh)
    return computed, skipped
