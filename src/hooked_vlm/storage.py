"""Work units on disk: the one store protocol, its checksum scheme and atomic writes.

Work is addressed by key (DESIGN.md): a unit is a pure function of (config, seed, key) whose
arrays a :class:`Store` keeps. Every store (:class:`UnitStore` here: one ``.npz`` per unit;
:class:`~hooked_vlm.attribution.MaskStore`: memory-mapped arrays of head-mask targets)
implements the same three calls, so a study's runner treats them alike:

- ``done(key)``: the unit was written completely and its checksum still matches (a damaged
  unit is not done: it is computed again);
- ``save(key, arrays, seconds)``: write the arrays, then the done-marker with their checksum
  and the seconds the unit took (a killed writer leaves the unit not done, never half done);
- ``load(key)``: the arrays, checked against the marker's checksum (a
  :class:`DamagedUnitError` naming the file otherwise).

Checksums are BLAKE2b (:func:`checksum`) of the bytes written. Files are written under a unique
temporary name and renamed into place (:func:`write_atomic`): a reader sees the old or the new
file, never a mix, also with several writers.

Example:
    >>> store = UnitStore("results/run/units")
    >>> store.save("gap/0002", {"x": np.arange(3)}, seconds=0.1)
    >>> store.done("gap/0002"), store.load("gap/0002")["x"]
    (True, array([0, 1, 2]))
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np

Arrays = Mapping[str, np.ndarray]
_KEY = re.compile(r"^[A-Za-z0-9_.=+-]+(/[A-Za-z0-9_.=+-]+)*$")


class StoreError(ValueError):
    """A store that does not match the run, is damaged, or is asked for what it lacks."""


class DamagedUnitError(StoreError):
    """A unit whose bytes no longer match the checksum written with them."""


class Store(Protocol):
    """Where a stage's units live (see the module docstring)."""

    def done(self, key: str) -> bool: ...

    def save(self, key: str, arrays: Arrays, seconds: float) -> None: ...

    def load(self, key: str) -> dict[str, np.ndarray]: ...

    def seconds(self, key: str) -> float:
        """How long the unit took when it was computed."""
        ...


def checksum(data: bytes | memoryview | np.ndarray) -> str:
    """The checksum of a unit's bytes (BLAKE2b, 16 bytes, hex).

    Example:
        >>> checksum(b"abc")
        'cf4ab791c62b8d2b2109c90275287816'
    """
    raw = data.tobytes() if isinstance(data, np.ndarray) else data
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` atomically: a uniquely named temporary file in the same
    directory, then ``os.replace``. Concurrent writers never share a temporary file, and a
    reader sees the old or the new content, never a mix.

    Example:
        >>> write_atomic(Path("results/summary.json"), json.dumps(summary))
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def differences(found: Mapping, wanted: Mapping, form: str = "{key}: {found!r} there, "
                "{wanted!r} now", prefix: str = "") -> list[str]:
    """One line per differing (nested) entry of two descriptions, in ``form``.

    Example:
        >>> differences({"n": 16}, {"n": 32})
        ['n: 16 there, 32 now']
    """
    out = []
    for key in sorted(found.keys() | wanted.keys(), key=str):
        a, b = found.get(key, "<unset>"), wanted.get(key, "<unset>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += differences(a, b, form, f"{prefix}{key}.")
        elif a != b:
            out.append(form.format(key=f"{prefix}{key}", found=a, wanted=b))
    return out


def any_done(folder: Path) -> bool:
    """Whether a memory-mapped store in ``folder`` has a unit done (unreadable flags: yes)."""
    for flags in Path(folder).glob("*.done.npy"):
        try:
            if np.load(flags, mmap_mode="r").any():
                return True
        except (ValueError, OSError):
            return True
    return False


def check_key(key: str) -> str:
    """``key`` if it is path-like (letters, digits and ``_.=+-`` separated by ``/``)."""
    if not isinstance(key, str) or not _KEY.match(key) or ".." in key.split("/"):
        raise StoreError(
            f"unit key {key!r}: use path-like keys of letters, digits and _.=+- separated by "
            "'/', e.g. 'knockout/caption/zero/0003'"
        )
    return key


class UnitStore:
    """Arrays of finished units under ``root``: ``<key>.npz`` (``numpy.savez``, read back
    with ``allow_pickle=False``: numbers and fixed-width strings, never pickle) and
    ``<key>.done.json`` (checksum and size of the ``.npz``, seconds, when it finished)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, key: str, suffix: str) -> Path:
        return self.root / f"{check_key(key)}{suffix}"

    def _marker(self, key: str) -> dict | None:
        path = self._path(key, ".done.json")
        try:
            return json.loads(path.read_text())
        except (ValueError, OSError):  # missing or unreadable: the unit is computed (again)
            return None

    def done(self, key: str) -> bool:
        marker = self._marker(key)
        if marker is None:
            return False
        try:
            data = self._path(key, ".npz").read_bytes()
        except FileNotFoundError:
            return False
        return len(data) == marker.get("bytes") and checksum(data) == marker.get("checksum")

    def save(self, key: str, arrays: Arrays, seconds: float) -> None:
        """Write the arrays, then the done-marker with their checksum (both atomically)."""
        path = self._path(key, ".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, **{name: _storable(name, a) for name, a in arrays.items()})
        data = buffer.getvalue()
        write_atomic(path, data)
        marker = {"key": key, "checksum": checksum(data), "bytes": len(data),
                  "seconds": seconds, "finished": time.time()}
        write_atomic(self._path(key, ".done.json"), json.dumps(marker))

    def load(self, key: str) -> dict[str, np.ndarray]:
        marker = self._marker(key)
        path = self._path(key, ".npz")
        if marker is None:
            raise StoreError(f"unit {key!r} has not finished (no done-marker under {self.root})")
        data = path.read_bytes() if path.exists() else b""
        if len(data) != marker.get("bytes") or checksum(data) != marker.get("checksum"):
            raise DamagedUnitError(
                f"{path} is damaged ({len(data)} bytes, checksum mismatch with its done-marker): "
                "run the same command again and the unit is computed anew")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                return {name: npz[name] for name in npz.files}
        except (ValueError, OSError, zipfile.BadZipFile) as err:
            raise DamagedUnitError(f"{path} cannot be read: {err}") from None

    def seconds(self, key: str) -> float:
        marker = self._marker(key)
        return float(marker["seconds"]) if marker else 0.0


def _storable(name: str, array: object) -> np.ndarray:
    out = np.asarray(array)
    if out.dtype == object:
        raise TypeError(
            f"array {name!r} has dtype object, which only pickle can store: give numbers, or "
            "strings as a fixed-width array (np.array(list_of_str))"
        )
    return out
