"""A study's results directory: claimed for one identity, atomically, before anything is written.

The identity is the config (every field the numbers depend on) and the fingerprints of the
weights and processor it runs with (:mod:`hooked_vlm.fingerprint`), written to
``config.json``. :func:`claim` holds the directory for a run:

- a new directory gets ``config.json`` (created under an exclusive lock: of two processes
  claiming it with different configs at once, exactly one wins);
- the same identity: the run resumes (shards and their merge share the directory);
- another identity with finished work (a unit's done-marker, a stage's results) is refused,
  naming the fields that differ: results of two configurations are never mixed;
- another identity with nothing finished (a first run that failed) is taken over, unless a
  process is still running in it.

The lock is ``fcntl.flock`` (released by the kernel when a process dies, also on SIGKILL):
an exclusive ``.claim.lock`` around the check-and-write, and a shared ``.running.lock`` held
for the whole run.

Example:
    >>> with claim("results/ng", {"study": "narrow-gate", "n": 16, ...}) as root:
    ...     ...                                     # the run; config.json is ours
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hooked_vlm.settings import ConfigError
from hooked_vlm.storage import any_done, differences, write_atomic

# what a run writes at the top of its directory; a take-over removes their leftovers
OUTPUTS = ("units", "store", "results", "session.json", "report.html", "summary.json")


@contextmanager
def claim(root: str | Path, identity: Mapping[str, Any]) -> Iterator[Path]:
    """Hold ``root`` for a run of ``identity`` (see the module docstring)."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create the results directory {root}: {err.strerror}") from None
    if not os.access(root, os.W_OK):
        raise ConfigError(f"the results directory {root} is not writable")
    identity = json.loads(json.dumps(identity))
    running = open(root / ".running.lock", "a")  # noqa: SIM115 - held for the whole run
    try:
        with open(root / ".claim.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _check_or_write(root, identity, running)
            fcntl.flock(running, fcntl.LOCK_SH)
        yield root
    finally:
        running.close()  # releases the shared lock


def _check_or_write(root: Path, identity: dict[str, Any], running: Any) -> None:
    path = root / "config.json"
    found = _read_identity(path)
    if found == identity:
        return
    if found is not None:
        differ = differences(found, identity)
        if finished(root):
            hint = (" The weights or processor differ: this directory was computed with "
                    "another checkpoint." if any(d.startswith("fingerprint") for d in differ)
                    else "")
            raise ConfigError(
                f"{root} holds results of a different configuration ({'; '.join(differ)}).{hint} "
                "Results of two configurations are never mixed: choose another output "
                "directory, or delete this one to start over.")
        try:  # nothing finished: take it over, unless another run is still at work in it
            fcntl.flock(running, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"{root} is in use by a run of a different configuration ({'; '.join(differ)}) "
                "that has not finished a unit yet: wait for it, or choose another output "
                "directory.") from None
        for name in OUTPUTS:
            target = root / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
        for stale in root.glob("timings*.json"):
            stale.unlink()
    write_atomic(path, json.dumps(identity, indent=2))


def _read_identity(path: Path) -> dict[str, Any] | None:
    try:
        found = read_json(path)
    except ValueError:
        found = "damaged"
    if found is None or isinstance(found, dict):
        return found
    return {"config.json": "unreadable"}  # damaged: another identity, never ours


def finished(root: Path) -> bool:
    """Whether anything under ``root`` was finished: a unit's done-marker, a memory-mapped
    store's done flag, or a stage's results."""
    return (any(root.rglob("*.done.json")) or any(root.rglob("results/*.json"))
            or any(any_done(flags.parent) for flags in root.rglob("*.done.npy")))


def read_json(path: Path, default: Any = None) -> Any:
    """``path``'s JSON, or ``default`` when the file does not exist."""
    return json.loads(path.read_text()) if path.exists() else default
