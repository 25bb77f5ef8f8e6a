"""``run_demo``: each study on each embedded model (each resumable), then the comparison page.

Results directory::

    config.json                      the demo's identity (another config here is an error)
    narrow-gate/<model>/             a full Narrow Gate results directory (its own report.html)
    head-attribution/<model>/        a full head-attribution results directory (the same)
    summary.json                     the contrast rows the page and the CLI table show
    report.html                      the comparison page, linking to every study's report
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hooked_vlm.storage import write_atomic
from hooked_vlm.studies.demo.config import DemoConfig
from hooked_vlm.studies.demo.contrast import attribution_row, narrow_gate_row
from hooked_vlm.studies.demo.report import write_demo_report
from hooked_vlm.studies.head_attribution import HEAD_ATTRIBUTION, HeadAttributionConfig
from hooked_vlm.studies.narrow_gate import NARROW_GATE, NarrowGateConfig
from hooked_vlm.studies.results import claim
from hooked_vlm.studies.runner import Progress, Summary, run_study


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

    Raises :class:`~hooked_vlm.settings.ConfigError` if ``out_dir`` holds a demo of another
    configuration.
    """
    with claim(out_dir, config.identity()) as root:
        summary = DemoSummary(root, [])
        for model in config.models:
            log(f"Narrow Gate study on {model}")
            ng = f"narrow-gate/{model}"
            study = NarrowGateConfig(model=model, data="synthetic", n=config.n, seed=config.seed)
            summary.studies[ng] = run_study(NARROW_GATE, study, root / ng, progress=progress)
            log(f"Head-attribution study on {model}")
            ha = f"head-attribution/{model}"
            heads = HeadAttributionConfig.from_dict(
                {"model": model, "data": "synthetic", "n": config.attribution_n,
                 "masks": config.masks, "seed": config.seed})
            summary.studies[ha] = run_study(HEAD_ATTRIBUTION, heads, root / ha,
                                            progress=progress)
            summary.rows.append({
                "narrow_gate": narrow_gate_row(root / ng),
                "head_attribution": attribution_row(root / ha),
                "reports": {"narrow-gate": f"{ng}/report.html",
                            "head-attribution": f"{ha}/report.html"},
            })
        write_atomic(root / "summary.json", json.dumps(summary.rows, indent=1))
        summary.report = write_demo_report(root, config, summary.rows)
    return summary
