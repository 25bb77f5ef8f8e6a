"""What every study's report shares: the run's facts, the model line, the timings, the page.

Example:
    >>> identity, info = run_facts(Path("results/ng"))
    >>> write_page(Path("results/ng"), "My study", {"model": model_line(info)}, sections,
    ...            "What this study asks.", info, ["gap", "flow"])
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hooked_vlm.storage import write_atomic
from hooked_vlm.studies.results import read_json
from hooked_vlm.viz.report import Section, Table, report_html


def run_facts(root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``config.json`` (the run's identity) and ``session.json`` (model and data facts)."""
    return (json.loads((root / "config.json").read_text()),
            json.loads((root / "session.json").read_text()))


def model_line(info: dict[str, Any], shape: str) -> str:
    """The header's model entry: name, architecture, kind, ``shape`` (layers, heads, width)."""
    return (f"{info['model']} ({info['architecture']}, "
            f"{'native' if info['native'] else 'encoder-based'}, {shape}; model config "
            f"{info.get('model_config') or '–'})")


def write_page(root: Path, title: str, header: dict[str, Any], sections: Sequence[Section],
               intro: str, notes: Sequence[str], stages: Sequence[str]) -> Path:
    """``root/report.html``: the sections under the header, the intro (then ``notes``), the
    timings of ``stages`` and the run's identity folded; returns its path."""
    intro += " Notes: " + " ".join(notes) if notes else ""
    page = report_html(title, header, sections, intro=intro,
                       details=json.loads((root / "config.json").read_text()),
                       header_tables=[timings_table(root, stages)])
    out = root / "report.html"
    write_atomic(out, page)
    return out


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
