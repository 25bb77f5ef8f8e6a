"""An on-disk store of targets, written by mask index: resumable, shardable, never pickled.

A store is a directory::

    meta.json              the run's description (config, model sizes, splits); written once
    <split>.npy            float32 [n_examples, n_masks]: the target under each mask (NaN: not yet)
    <split>.done.npy       uint8 [n_examples, n_chunks]: 1 once unit (example, chunk) is on disk
    <name>.safetensors     tensors computed once per run (e.g. the dataset-mean baseline)

A unit of work is (split, example, mask chunk). :meth:`MaskStore.write` puts its values into the
memory-mapped array, flushes them, and only then sets its done byte (and flushes that): a run
killed at any moment leaves every unit either done with its values on disk or not done, and a
resumed run redoes only the latter. Units are pure functions of their index, so writing one twice
writes the same numbers. Processes on one machine may write disjoint units into one store at
the same time (the page cache is shared; each unit owns its own bytes). Every file is created
complete under a unique temporary name and linked into place (``os.link`` fails if another
process got there first, and the loser then uses the winner's file): no half-written file is
ever visible. Reopening with a different description is an error.

Across machines on a network file system (NFS) two units' bytes can share a page that one
client writes back whole; there, give each machine its own store.

Example:
    >>> store = MaskStore.open("runs/x", meta, {"train": (100, 4096)}, chunk_size=64)
    >>> store.write(Unit("train", 3, 0), values)          # masks 0..63 of example 3
    >>> store.targets("train")                             # [100, 4096], raises if incomplete
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.format import open_memmap
from safetensors.torch import load_file, save_file
from torch import Tensor

FORMAT = 1


class StoreError(ValueError):
    """A store that does not match the run, is incomplete, or is asked for what it lacks."""


@dataclass(frozen=True)
class Unit:
    """One unit of work: the masks of chunk ``chunk`` of ``split``, on example ``example``."""

    split: str
    example: int
    chunk: int


class MaskStore:
    """Memory-mapped target arrays with per-unit done markers (see the module docstring)."""

    def __init__(self, path: Path, meta: dict[str, Any], writable: bool = True) -> None:
        self.path = path
        self.meta = meta
        self.writable = writable
        self.chunk_size: int = meta["chunk_size"]
        self.shapes: dict[str, tuple[int, int]] = {
            name: tuple(shape) for name, shape in meta["splits"].items()
        }
        mode = "r+" if writable else "r"
        self._values = {s: open_memmap(self._file(s), mode=mode) for s in self.shapes}
        self._done = {s: open_memmap(self._file(s, "done"), mode=mode) for s in self.shapes}

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        meta: Mapping[str, Any],
        splits: Mapping[str, tuple[int, int]],
        chunk_size: int,
    ) -> MaskStore:
        """Create the store at ``path``, or reopen it if it holds the same description.

        ``meta``: JSON-able description of the run; ``splits``: ``{name: (n_examples,
        n_masks)}``; ``chunk_size``: masks per unit.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        full = _normalised({
            "format": FORMAT, "run": dict(meta), "chunk_size": int(chunk_size),
            "splits": {k: [int(v[0]), int(v[1])] for k, v in splits.items()},
        })
        text = json.dumps(full, indent=1)
        _create_exclusive(path / "meta.json", lambda tmp: tmp.write_text(text))
        found = json.loads((path / "meta.json").read_text())
        if found != full:
            raise StoreError(
                f"the store at {path} was made for another run; differing entries: "
                f"{_differences(found, full)}. Use a new directory, or the same settings."
            )
        for name, (n_examples, n_masks) in full["splits"].items():
            _create_array(path / f"{name}.npy", (n_examples, n_masks), np.float32, np.nan)
            _create_array(path / f"{name}.done.npy",
                          (n_examples, chunk_count(n_masks, chunk_size)), np.uint8, 0)
        return cls(path, full)

    @classmethod
    def load(cls, path: str | os.PathLike, writable: bool = False) -> MaskStore:
        """An existing store, as its ``meta.json`` describes it (read-only by default)."""
        path = Path(path)
        if not (path / "meta.json").exists():
            raise StoreError(f"no store at {path} (no meta.json).")
        return cls(path, json.loads((path / "meta.json").read_text()), writable)

    # ------------------------------------------------------------------ units
    def n_chunks(self, split: str) -> int:
        return self._done[self._split(split)].shape[1]

    def chunk_range(self, split: str, chunk: int) -> tuple[int, int]:
        """Mask indices ``start, stop`` of ``chunk``."""
        n_masks = self.shapes[self._split(split)][1]
        if not 0 <= chunk < self.n_chunks(split):
            raise StoreError(f"chunk {chunk} of split {split!r} does not exist "
                             f"({self.n_chunks(split)} chunks).")
        start = chunk * self.chunk_size
        return start, min(start + self.chunk_size, n_masks)

    def is_done(self, unit: Unit) -> bool:
        return bool(self._done[self._split(unit.split)][unit.example, unit.chunk])

    def write(self, unit: Unit, values: np.ndarray) -> None:
        """Store ``values`` (the unit's targets, one per mask), flush, then mark it done."""
        if not self.writable:
            raise StoreError(f"the store at {self.path} was opened read-only "
                             "(MaskStore.load(path, writable=True) to write).")
        start, stop = self.chunk_range(unit.split, unit.chunk)
        values = np.asarray(values, dtype=np.float32)
        if values.shape != (stop - start,):
            raise StoreError(
                f"unit {unit} covers masks {start}..{stop - 1}: expected {stop - start} values, "
                f"got shape {values.shape}."
            )
        array, done = self._values[unit.split], self._done[unit.split]
        array[unit.example, start:stop] = values
        array.flush()
        done[unit.example, unit.chunk] = 1
        done.flush()

    def missing(self, split: str | None = None) -> list[Unit]:
        """Units not yet done (of ``split``, or of every split), ordered by example."""
        names = [self._split(split)] if split is not None else list(self.shapes)
        todo = [
            Unit(name, int(e), int(c))
            for name in names for e, c in np.argwhere(np.asarray(self._done[name]) == 0)
        ]
        return sorted(todo, key=lambda u: (u.example, names.index(u.split), u.chunk))

    def targets(self, split: str, allow_missing: bool = False) -> np.ndarray:
        """A copy of ``split``'s targets ``[n_examples, n_masks]``; raises if any unit is
        missing unless ``allow_missing`` (missing values are NaN)."""
        missing = self.missing(split)
        if missing and not allow_missing:
            raise StoreError(
                f"split {split!r} of {self.path} has {len(missing)} unit(s) not done (first: "
                f"{missing[0]}); run them (the run resumes where it stopped)."
            )
        return np.array(self._values[split])

    # ------------------------------------------------------------------ shared tensors
    def tensors(self, name: str, compute: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
        """``<name>.safetensors``: computed once by whoever gets there first, then read back
        by everyone (so every process uses the same numbers)."""
        file = self.path / f"{name}.safetensors"
        if not file.exists() and not self.writable:
            raise StoreError(f"{file} is missing and the store was opened read-only.")
        if not file.exists():
            values = {k: v.detach().cpu().contiguous() for k, v in compute().items()}
            _create_exclusive(file, lambda tmp: save_file(values, str(tmp)))
        return load_file(str(file))

    # ------------------------------------------------------------------ internals
    def _split(self, split: str) -> str:
        if split not in self.shapes:
            raise StoreError(f"no split {split!r} in this store; splits: {', '.join(self.shapes)}.")
        return split

    def _file(self, split: str, kind: str = "") -> Path:
        return self.path / (f"{split}.{kind}.npy" if kind else f"{split}.npy")


def chunk_count(n_masks: int, chunk_size: int) -> int:
    """Units per example of a split of ``n_masks`` masks."""
    return -(-n_masks // chunk_size)


def _create_exclusive(path: Path, write: Callable[[Path], Any]) -> bool:
    """Write a complete file under a unique temporary name, then link it to ``path`` unless
    ``path`` exists already. True if this call created it."""
    if path.exists():
        return False
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def _create_array(path: Path, shape: tuple[int, int], dtype: Any, fill: float) -> None:
    def write(tmp: Path) -> None:
        array = open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        array[:] = fill
        array.flush()
        del array

    _create_exclusive(path, write)


def _normalised(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` as it reads back from JSON (tuples become lists, ...); raises if not JSON-able."""
    try:
        return json.loads(json.dumps(data))
    except TypeError as err:
        raise StoreError(f"the run description must be JSON-serialisable: {err}") from None


def _differences(found: dict[str, Any], wanted: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(found) | set(wanted)):
        a, b = found.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: stored {a!r}, now {b!r}")
    return out
