"""An on-disk store of targets, written by mask index: resumable, shardable, never pickled.

A store is a directory::

    meta.json              the run's description (config, model sizes and fingerprint, splits)
    <split>.npy            float32 [n_examples, n_masks]: the target under each mask (NaN: not yet)
    <split>.done.npy       uint8 [n_examples, n_chunks]: 1 once unit (example, chunk) is on disk
    <split>.sum.npy        uint64 [n_examples, n_chunks]: each unit's checksum
    <split>.seconds.npy    float32 [n_examples, n_chunks]: how long each unit took
    <name>.safetensors     tensors computed once per run (e.g. the dataset-mean baseline),
                           with <name>.safetensors.sum (their checksum)

A unit is keyed ``"<split>/<example>/<chunk>"`` (:func:`unit_key`) and the store implements
the package's one store protocol (:class:`~hooked_vlm.storage.Store`): ``done`` / ``save`` /
``load``. ``save`` puts the unit's values into the memory-mapped array, flushes them, writes
their checksum and only then sets the done byte (and flushes that): a run killed at any moment
leaves every unit either done with its values on disk or not done, and a resumed run redoes
only the latter. ``done`` verifies the checksum: values damaged on disk make the unit not done
(it is computed again), and a file of the wrong size (truncated) is refused when the store is
opened, before numpy could zero-extend it. Units are pure functions of their key, so writing
one twice writes the same numbers. Processes on one machine may write disjoint units into one
store at the same time (the page cache is shared; each unit owns its own bytes). Every file is
created complete under a unique temporary name and linked into place (``os.link`` fails if
another process got there first, and the loser then uses the winner's file): no half-written
file is ever visible. Reopening with a different description is an error, unless no unit is
done yet: then the store is made anew for the new run.

Across machines on a network file system (NFS) two units' bytes can share a page that one
client writes back whole; there, give each machine its own store, and :func:`merge_stores`
them once every machine is done.

Example:
    >>> store = MaskStore.open("runs/x", meta, {"train": (100, 4096)}, chunk_size=64)
    >>> store.save("train/3/0", {"values": values}, seconds=0.5)   # masks 0..63 of example 3
    >>> store.targets("train")                             # [100, 4096], raises if incomplete
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.format import open_memmap
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from hooked_vlm.storage import Arrays, StoreError, any_done, checksum, differences

FORMAT = 2
_ARRAYS = {"": (np.float32, np.nan), "done": (np.uint8, 0), "sum": (np.uint64, 0),
           "seconds": (np.float32, 0.0)}


def unit_key(split: str, example: int, chunk: int) -> str:
    """The key of unit (split, example, chunk)."""
    return f"{split}/{example}/{chunk}"


def parse_key(key: str) -> tuple[str, int, int]:
    """``"train/3/0"`` -> ``("train", 3, 0)``."""
    try:
        split, example, chunk = key.split("/")
        return split, int(example), int(chunk)
    except (ValueError, AttributeError):
        raise StoreError(f"a mask-store unit key is 'split/example/chunk', got {key!r}") from None


def _unit_sum(values: np.ndarray) -> np.uint64:
    """A unit's checksum as one uint64: the first 8 bytes of its BLAKE2b."""
    digest = hashlib.blake2b(np.ascontiguousarray(values, np.float32).tobytes(), digest_size=8)
    return np.frombuffer(digest.digest(), dtype=np.uint64)[0]


class MaskStore:
    """Memory-mapped target arrays with checksummed per-unit done markers (see the module
    docstring)."""

    def __init__(self, path: Path, meta: dict[str, Any], writable: bool = True) -> None:
        self.path = path
        self.meta = meta
        self.writable = writable
        try:
            self.chunk_size: int = meta["chunk_size"]
            self.shapes: dict[str, tuple[int, int]] = {
                name: tuple(shape) for name, shape in meta["splits"].items()
            }
        except (KeyError, TypeError, AttributeError):
            raise StoreError(f"{path / 'meta.json'} is not a mask store's description") from None
        mode = "r+" if writable else "r"
        self._arrays = {
            (split, kind): _open_array(self._file(split, kind), self._shape(split, kind),
                                       _ARRAYS[kind][0], mode)
            for split in self.shapes for kind in _ARRAYS
        }

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        meta: Mapping[str, Any],
        splits: Mapping[str, tuple[int, int]],
        chunk_size: int,
    ) -> MaskStore:
        """Create the store at ``path``, or reopen it if it holds the same description (a
        store with another description and no unit done is made anew).

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
        found = _read_meta(path)
        if found != full:
            if any_done(path):
                raise StoreError(
                    f"the store at {path} was made for another run; differing entries: "
                    f"{_stored_vs_now(found, full)}. Use a new directory, or the same settings.")
            _clear(path)  # nothing done: the store is made anew for this run
            _create_exclusive(path / "meta.json", lambda tmp: tmp.write_text(text))
            if _read_meta(path) != full:
                raise StoreError(f"another process is making a store of another run at {path}")
        for name, (n_examples, n_masks) in full["splits"].items():
            for kind, (dtype, fill) in _ARRAYS.items():
                shape = (n_examples, n_masks if kind == "" else chunk_count(n_masks, chunk_size))
                _create_array(path / _name(name, kind), shape, dtype, fill)
        return cls(path, full)

    @classmethod
    def from_path(cls, path: str | os.PathLike, writable: bool = False) -> MaskStore:
        """An existing store, as its ``meta.json`` describes it (read-only by default)."""
        path = Path(path)
        if not (path / "meta.json").exists():
            raise StoreError(f"no store at {path} (no meta.json).")
        return cls(path, _read_meta(path), writable)

    # ------------------------------------------------------------------ the store protocol
    def done(self, key: str) -> bool:
        """Unit ``key`` is on disk and its values match their checksum."""
        split, example, chunk = self._address(key)
        if not self._arrays[split, "done"][example, chunk]:
            return False
        start, stop = self.chunk_range(split, chunk)
        values = self._arrays[split, ""][example, start:stop]
        return bool(_unit_sum(values) == self._arrays[split, "sum"][example, chunk])

    def save(self, key: str, arrays: Arrays, seconds: float = 0.0) -> None:
        """Store ``arrays["values"]`` (the unit's targets, one per mask), flush, write their
        checksum, then mark the unit done."""
        self._check_writable()
        split, example, chunk = self._address(key)
        start, stop = self.chunk_range(split, chunk)
        values = np.asarray(arrays["values"], dtype=np.float32)
        if values.shape != (stop - start,):
            raise StoreError(
                f"unit {key} covers masks {start}..{stop - 1}: expected {stop - start} values, "
                f"got shape {values.shape}."
            )
        self._arrays[split, ""][example, start:stop] = values
        self._arrays[split, ""].flush()
        self._arrays[split, "sum"][example, chunk] = _unit_sum(values)
        self._arrays[split, "seconds"][example, chunk] = seconds
        for kind in ("sum", "seconds"):
            self._arrays[split, kind].flush()
        self._arrays[split, "done"][example, chunk] = 1
        self._arrays[split, "done"].flush()

    def load(self, key: str) -> dict[str, np.ndarray]:
        """``{"values": ...}`` of a done unit."""
        if not self.done(key):
            raise StoreError(f"unit {key} of {self.path} is not done (or its values no longer "
                             "match their checksum): run it (the run resumes)")
        split, example, chunk = self._address(key)
        start, stop = self.chunk_range(split, chunk)
        return {"values": np.array(self._arrays[split, ""][example, start:stop])}

    def seconds(self, key: str) -> float:
        split, example, chunk = self._address(key)
        return float(self._arrays[split, "seconds"][example, chunk])

    # ------------------------------------------------------------------ units
    def n_chunks(self, split: str) -> int:
        return self._arrays[self._split(split), "done"].shape[1]

    def chunk_range(self, split: str, chunk: int) -> tuple[int, int]:
        """Mask indices ``start, stop`` of ``chunk``."""
        n_masks = self.shapes[self._split(split)][1]
        if not 0 <= chunk < self.n_chunks(split):
            raise StoreError(f"chunk {chunk} of split {split!r} does not exist "
                             f"({self.n_chunks(split)} chunks).")
        start = chunk * self.chunk_size
        return start, min(start + self.chunk_size, n_masks)

    def units(self) -> list[str]:
        """Every unit's key, done or not, ordered by example, split, chunk (the order of
        :func:`~hooked_vlm.attribution.units`): what a shard cuts."""
        names = list(self.shapes)
        return [unit_key(split, e, c) for e in range(max(n for n, _ in self.shapes.values()))
                for split in names if e < self.shapes[split][0]
                for c in range(self.n_chunks(split))]

    def missing(self, split: str | None = None) -> list[str]:
        """Units not done (of ``split``, or of every split), ordered by example."""
        return [key for key in self.units()
                if (split is None or key.split("/")[0] == self._split(split))
                and not self.done(key)]

    def absorb(self, other: MaskStore) -> int:
        """Copy every unit done in ``other`` (a store of the same run) and not done here;
        returns how many."""
        if other.meta != self.meta:
            raise StoreError(
                f"{other.path} holds another run than {self.path}; differing entries: "
                f"{_stored_vs_now(other.meta, self.meta)}."
            )
        copied = 0
        for key in self.units():
            if other.done(key) and not self.done(key):
                self.save(key, other.load(key), other.seconds(key))
                copied += 1
        return copied

    def targets(self, split: str, allow_missing: bool = False) -> np.ndarray:
        """A copy of ``split``'s targets ``[n_examples, n_masks]``; raises if any unit is
        missing (or damaged) unless ``allow_missing`` (its values are then NaN)."""
        missing = self.missing(split)
        if missing and not allow_missing:
            raise StoreError(
                f"split {split!r} of {self.path} has {len(missing)} unit(s) not done (first: "
                f"{missing[0]}); run them (the run resumes where it stopped)."
            )
        out = np.array(self._arrays[split, ""])
        for key in missing:
            _, example, chunk = self._address(key)
            start, stop = self.chunk_range(split, chunk)
            out[example, start:stop] = np.nan
        return out

    # ------------------------------------------------------------------ shared tensors
    def tensors(self, name: str, compute: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
        """``<name>.safetensors``: computed once by whoever gets there first, then read back
        (checked against its checksum) by everyone, so every process uses the same numbers."""
        file = self.path / f"{name}.safetensors"
        if not file.exists() and not self.writable:
            raise StoreError(f"{file} is missing and the store was opened read-only.")
        if not file.exists():
            values = {k: v.detach().cpu().contiguous() for k, v in compute().items()}
            _create_exclusive(file, lambda tmp: save_file(values, str(tmp)))
            _create_exclusive(file.with_name(file.name + ".sum"),
                              lambda tmp: tmp.write_text(checksum(file.read_bytes())))
        return read_tensors(file)

    def tensor_names(self) -> list[str]:
        """Names of the shared tensors on disk (``<name>.safetensors``)."""
        return sorted(p.name.removesuffix(".safetensors")
                      for p in self.path.glob("*.safetensors"))

    # ------------------------------------------------------------------ internals
    def _address(self, key: str) -> tuple[str, int, int]:
        split, example, chunk = parse_key(key)
        n_examples = self.shapes[self._split(split)][0]
        if not 0 <= example < n_examples or not 0 <= chunk < self.n_chunks(split):
            raise StoreError(f"unit {key} is outside the store ({n_examples} examples, "
                             f"{self.n_chunks(split)} chunks of {split!r}).")
        return split, example, chunk

    def _check_writable(self) -> None:
        if not self.writable:
            raise StoreError(f"the store at {self.path} was opened read-only "
                             "(MaskStore.from_path(path, writable=True) to write).")

    def _split(self, split: str) -> str:
        if split not in self.shapes:
            raise StoreError(f"no split {split!r} in this store; splits: {', '.join(self.shapes)}.")
        return split

    def _shape(self, split: str, kind: str) -> tuple[int, int]:
        n_examples, n_masks = self.shapes[split]
        return (n_examples, n_masks if kind == "" else chunk_count(n_masks, self.chunk_size))

    def _file(self, split: str, kind: str = "") -> Path:
        return self.path / _name(split, kind)


def _name(split: str, kind: str) -> str:
    return f"{split}.{kind}.npy" if kind else f"{split}.npy"


def read_tensors(file: Path) -> dict[str, Tensor]:
    """A store's ``.safetensors`` file, checked against its checksum; a clear error if it is
    damaged."""
    sums = file.with_name(file.name + ".sum")
    if sums.exists() and sums.read_text().strip() != checksum(file.read_bytes()):
        raise StoreError(f"{file} is damaged (checksum mismatch): delete it and its .sum, and "
                         "rerun (it is computed again)")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as err:
        raise StoreError(f"{file} cannot be read ({err}): delete it and rerun (it is "
                         "computed again)") from None


def merge_stores(sources: Sequence[str | os.PathLike], path: str | os.PathLike) -> MaskStore:
    """One store at ``path`` with every unit done in any of ``sources`` (stores of one run,
    e.g. one per Slurm array task on machines that share no page cache); ``path`` may be new,
    or one of the sources. Shared tensors (the dataset-mean baseline) must be equal in every
    source that has them: units ablated against different baselines do not mix.

    Example:
        >>> store = merge_stores(sorted(Path("runs/coco").glob("shard-*")), "runs/coco/all")
        >>> fit_store(store)                     # raises if a unit is missing in every shard
    """
    stores = [MaskStore.from_path(source) for source in sources]
    if not stores:
        raise StoreError("merge_stores needs at least one source store.")
    first = stores[0]
    for store in stores[1:]:
        if store.meta != first.meta:
            raise StoreError(
                f"{store.path} and {first.path} hold different runs; differing entries: "
                f"{_stored_vs_now(first.meta, store.meta)}. Only shards of one run merge."
            )
    target = MaskStore.open(path, first.meta["run"], first.shapes, first.chunk_size)
    for name in sorted({n for store in stores for n in store.tensor_names()}):
        have = [store for store in stores if name in store.tensor_names()]
        values = read_tensors(have[0].path / f"{name}.safetensors")
        for store in [*have[1:], target]:
            if (store.path / f"{name}.safetensors").exists() and not _same_tensors(
                    values, read_tensors(store.path / f"{name}.safetensors")):
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


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        found = json.loads((path / "meta.json").read_text())
    except ValueError:
        raise StoreError(f"{path / 'meta.json'} is damaged (not JSON): this store cannot be "
                         "trusted; delete the directory to start over") from None
    if not isinstance(found, dict):
        raise StoreError(f"{path / 'meta.json'} is not a mask store's description")
    return found


def _clear(path: Path) -> None:
    """Remove a store's files (only when no unit is done)."""
    for item in path.iterdir():
        if item.name == "meta.json" or item.suffix in (".npy", ".safetensors", ".sum"):
            item.unlink()
        elif item.is_dir() and item.name.startswith("."):
            shutil.rmtree(item)


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
        array = open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)  # a sparse file
        # its blocks are reserved before the first write through the memory map: a full
        # disk is then an OSError here, not a SIGBUS on a page the filesystem cannot back
        with open(tmp, "r+b") as f:
            try:
                os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
            except OSError as err:
                raise StoreError(f"cannot create {path} ({os.fstat(f.fileno()).st_size / 1e6:.1f}"
                                 f" MB): {err.strerror}") from None
        array[:] = fill
        array.flush()
        del array

    _create_exclusive(path, write)


def _open_array(path: Path, shape: tuple[int, int], dtype: Any, mode: str) -> np.memmap:
    """A store array, refused when its file is missing, truncated or of another shape (numpy
    would zero-extend a short file opened for writing)."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            found_shape, _, found_dtype = read(f)
            data_start = f.tell()
    except FileNotFoundError:
        raise StoreError(f"{path} is missing: the store is incomplete; delete the directory "
                         "to start over") from None
    except (ValueError, OSError) as err:
        raise StoreError(f"{path} is damaged ({err}); delete the store directory to start "
                         "over") from None
    expected = data_start + int(np.prod(shape)) * np.dtype(dtype).itemsize
    size = path.stat().st_size
    if tuple(found_shape) != tuple(shape) or np.dtype(found_dtype) != np.dtype(dtype) \
            or size != expected:
        raise StoreError(
            f"{path} is damaged: {size} bytes of {found_dtype}{tuple(found_shape)}, expected "
            f"{expected} bytes of {np.dtype(dtype)}{tuple(shape)} (a truncated or overwritten "
            "file). Its values cannot be trusted: delete the store directory to start over.")
    return open_memmap(path, mode=mode)


def _normalised(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` as it reads back from JSON (tuples become lists, ...); raises if not JSON-able."""
    try:
        return json.loads(json.dumps(data))
    except TypeError as err:
        raise StoreError(f"the run description must be JSON-serialisable: {err}") from None


def _stored_vs_now(found: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    return differences(found, wanted, "{key}: stored {found!r}, now {wanted!r}")
