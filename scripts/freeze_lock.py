"""Write a lock file (pip constraints) from a virtual environment the suite passed in.

``pip freeze`` minus the project itself, with local version labels dropped (``torch==2.13.0``
then matches the CPU wheel here and a CUDA build of the same release on a GPU machine).

Example:
    python scripts/freeze_lock.py .venv-upgrade constraints.txt "the newest admitted releases"
"""

from __future__ import annotations

import platform
import subprocess
import sys
from datetime import date
from pathlib import Path


def frozen(venv: Path) -> list[str]:
    """``name==version`` lines of every package in ``venv`` but the editable project."""
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "freeze", "--exclude-editable"],
        check=True, capture_output=True, text=True,
    ).stdout
    lines = [ln for ln in out.splitlines() if ln and not ln.startswith(("#", "-e "))]
    return sorted((ln.split("+", 1)[0] for ln in lines), key=str.lower)


def main(venv: str, out: str, what: str) -> None:
    header = [
        f"# Lock: {what}. The test suite passed on exactly these versions",
        f"# (Python {platform.python_version()}, {date.today().isoformat()}). Written by",
        "# scripts/freeze_lock.py from `make upgrade-lock` / `make min-lock`; do not edit by hand.",
    ]
    Path(out).write_text("\n".join([*header, *frozen(Path(venv))]) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:4])
