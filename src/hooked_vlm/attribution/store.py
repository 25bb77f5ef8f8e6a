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
client writes back whole; there, give each machine its own store, and :func:`merge_stores`
them once every machine is done.

Example:
    >>> store = MaskStore.open("runs/x", meta, {"train": (100, 4096)}, chunk_size=64)
    >>> store.write(Unit("train", 3, 0), values)          # masks 0..63 of example 3
    >>> store.targets("train")                             # [100, 4096], raises if incomplete
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
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
        self._check_writable()
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

    def units(self) -> list[Unit]:
        """Every unit of the run, done or not, ordered by example, split, chunk (the order of
        :func:`~hooked_vlm.attribution.units`): what a shard cuts."""
        return self._ordered(list(self.shapes), lambda done: np.ones_like(done, dtype=bool))

    def missing(self, split: str | None = None) -> list[Unit]:
        """Units not yet done (of ``split``, or of every split), ordered by example."""
        names = [self._split(split)] if split is not None else list(self.shapes)
        return self._ordered(names, lambda done: done == 0)

    def _ordered(self, names: list[str], pick: Callable[[np.ndarray], np.ndarray]) -> list[Unit]:
        todo = [
            Unit(name, int(e), int(c))
            for name in names for e, c in np.argwhere(pick(np.asarray(self._done[name])))
        ]
        return sorted(todo, key=lambda u: (u.example, names.index(u.split), u.chunk))

    def absorb(self, other: MaskStore) -> int:
        """Copy every unit done in ``other`` (a store of the same run) and not done here;
        returns how many. Values are flushed before their done markers, as in :meth:`write`."""
        if other.meta != self.meta:
            raise StoreError(
                f"{other.path} holds another run than {self.path}; differing entries: "
                f"{_differences(other.meta, self.meta)}."
            )
        self._check_writable()
        copied = 0
        for split in self.shapes:
            new = (np.asarray(other._done[split]) == 1) & (np.asarray(self._done[split]) == 0)
            for example, chunk in np.argwhere(new):
                start, stop = self.chunk_range(split, int(chunk))
                self._values[split][example, start:stop] = other._values[split][example, start:stop]
            self._values[split].flush()
            self._done[split][new] = 1
            self._done[split].flush()
            copied += int(new.sum())
        return copied

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

    def tensor_names(self) -> list[str]:
        """Names of the shared tensors on disk (``<name>.safetensors``)."""
        return sorted(p.name.removesuffix(".safetensors")
                      for p in self.path.glob("*.safetensors"))

    # ------------------------------------------------------------------ internals
    def _check_writable(self) -> None:
        if not self.writable:
            raise StoreError(f"the store at {self.path} was opened read-only "
                             "(MaskStore.load(path, writable=True) to write).")

    def _split(self, split: str) -> str:
        if split not in self.shapes:
            raise StoreError(f"no split {split!r} in this store; splits: {', '.join(self.shapes)}.")
        return split

    def _file(self, split: str, kind: str = "") -> Path:
        return self.path / (f"{split}.{kind}.npy" if kind else f"{split}.npy")


def merge_stores(sources: Sequence[str | os.PathLike], path: str | os.PathLike) -> MaskStore:
    """One store at ``path`` with every unit done in any of ``sources`` (stores of one run,
    e.g. one per Slurm array task on machines that share no page cache); ``path`` may be new,
    or one of the sources. Shared tensors (the dataset-mean baseline) must be equal in every
    source that has them: units ablated against different baselines do not mix.

    Example:
        >>> store = merge_stores(sorted(Path("runs/coco").glob("shard-*")), "runs/coco/all")
        >>> fit_store(store)                     # raises if a unit is missing in every shard
    """
    stores = [MaskStore.load(source) for source in sources]
    if not stores:
        raise StoreError("merge_stores needs at least one source store.")
    first = stores[0]
    for store in stores[1:]:
        if store.meta != first.meta:
            raise StoreError(
                f"{store.path} and {first.path} hold different runs; differing entries: "
                f"{_differences(first.meta, store.meta)}. Only shards of one run merge."
            )
    target = MaskStore.open(path, first.meta["run"], first.shapes, first.chunk_size)
    for name in sorted({n for store in stores for n in store.tensor_names()}):
        have = [store for store in stores if name in store.tensor_names()]
        values = load_file(str(have[0].path / f"{name}.safetensors"))
        for store in [*have[1:], target]:
            if (store.path / f"{name}.safetensors").exists() and not _same_tensors(
                    values, load_file(str(store.path / f"{name}.safetensors"))):
                raise StoreError(
                    f"{name}.safetensors differs between {have[0].path} and {store.path}: the "
                    "shards computed it on different hardware or software, so their units are "
                    "not comparable. Copy one store's file into every shard's store before "
                    "running them (or rerun the odd shard)."
                )
        target.tensors(name, lambda values=values: values)
    for store in stores:
        target.absorb(store)
    return target


def _same_tensors(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


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
