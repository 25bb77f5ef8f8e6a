"""What every study's report shares: the timings table, read from the results directory.

Example:
    >>> timings_table(Path("results/ng"), ["gap", "flow"])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hooked_vlm.studies.results import read_json
from hooked_vlm.viz.report import Table


def timings_table(root: Path, stages: Sequence[str]) -> Table:
    """Per stage (and per shard that ran it): units, computed, compute, reduce and wall
    seconds."""
    cells = ("units", "computed", "unit_seconds", "reduce_seconds", "wall_seconds")
    timings = read_json(root / "timings.json", {})
    rows = [[name, *(timings[name][c] for c in cells)] for name in stages if name in timings]
    for path in sorted(root.glob("timings-shard-*.json")):
        shard = path.stem.removeprefix("timings-shard-").replace("-of-", "/")
        for name, t in read_json(path).items():
            rows.append([f"{name} (shard {shard})", *(t[c] for c in cells)])
    return Table(["stage", "units", "computed this session", "compute s (all sessions)",
                  "reduce s", "wall s (this session)"], rows,
                 "Timings: the compute column adds up every unit's own time, also from earlier, "
                 "interrupted sessions (and from shards).")
