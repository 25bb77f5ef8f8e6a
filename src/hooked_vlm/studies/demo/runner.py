"""``run_demo``: each study on each embedded model (each resumable), then the comparison page.

Results directory::

    config.json                      the demo's identity (another config here is an error)
    narrow-gate/<model>/             a full Narrow Gate results directory (its own report.html)
    summary.json                     the contrast rows the page and the CLI table show
    report.html                      the comparison page, linking to every study's report
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hooked_vlm.studies.demo.config import DemoConfig
from hooked_vlm.studies.demo.contrast import narrow_gate_row
from hooked_vlm.studies.demo.report import write_demo_report
from hooked_vlm.studies.narrow_gate import NarrowGateConfig, run_narrow_gate
from hooked_vlm.studies.narrow_gate.runner import Progress, Summary
from hooked_vlm.studies.results import ResultsDir, write_atomic


@dataclass
class DemoSummary:
    """The contrast rows (one per model), every study's summary and the page's path."""

    out_dir: Path
    rows: list[dict[str, Any]]
    studies: dict[str, Summary] = field(default_factory=dict)  # "narrow-gate/tiny-native": ...
    report: Path | None = None


def run_demo(
    config: DemoConfig,
    out_dir: str | Path,
    progress: Progress | None = None,
    log: Callable[[str], None] = print,
) -> DemoSummary:
    """Run (or resume) the demo into ``out_dir``; see the module docstring for the layout.

    Raises ``ValueError`` if ``out_dir`` holds a demo of another configuration.
    """
    results = ResultsDir(out_dir, config.identity())
    summary = DemoSummary(results.root, [])
    for model in config.models:
        log(f"Narrow Gate study on {model}")
        key = f"narrow-gate/{model}"
        study = NarrowGateConfig(model=model, data="synthetic", n=config.n, seed=config.seed)
        summary.studies[key] = run_narrow_gate(study, results.path(key), progress)
        summary.rows.append({"narrow_gate": narrow_gate_row(results.path(key)),
                             "reports": {"narrow-gate": f"{key}/report.html"}})
    write_atomic(results.path("summary.json"), json.dumps(summary.rows, indent=1))
    summary.report = write_demo_report(results.root, config, summary.rows)
    return summary
