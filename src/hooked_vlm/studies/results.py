"""A study's results directory: config, one JSON record per finished unit, a summary, figures.

Records are written as each unit finishes (atomically), so a killed study resumes where it
stopped and nothing computed is lost.

Example:
    >>> store = ResultsDir("results/demo", config={"models": ["chameleon"]})
    >>> if not store.done("chameleon"):
    ...     store.save("chameleon", {"eoi_share": 0.4})
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


class ResultsDir:
    """Directory with ``config.json``, ``records/<key>.json`` and free-form outputs."""

    def __init__(self, root: str | Path, config: dict[str, Any]) -> None:
        self.root = Path(root)
        (self.root / "records").mkdir(parents=True, exist_ok=True)
        config_path = self.root / "config.json"
        if config_path.exists():
            previous = json.loads(config_path.read_text())
            if previous != config:
                differ = sorted(k for k in previous.keys() | config.keys()
                                if previous.get(k) != config.get(k))
                changes = "; ".join(
                    f"{k}: {previous.get(k, '<unset>')!r} there, {config.get(k, '<unset>')!r} now"
                    for k in differ
                )
                raise ValueError(
                    f"{self.root} holds results of a different configuration ({changes}). "
                    "Results of two configurations are never mixed: choose another output "
                    "directory, or delete this one to start over."
                )
        else:
            write_atomic(config_path, json.dumps(config, indent=2))

    def done(self, key: str) -> bool:
        return (self.root / "records" / f"{key}.json").exists()

    def save(self, key: str, record: dict[str, Any]) -> None:
        write_atomic(self.root / "records" / f"{key}.json", json.dumps(record, indent=2))

    def load(self, key: str) -> dict[str, Any]:
        return json.loads((self.root / "records" / f"{key}.json").read_text())

    def path(self, name: str) -> Path:
        return self.root / name


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
