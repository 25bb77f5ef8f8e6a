"""The README quickstart runs as written; the CLI's info and demo work and the demo resumes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from typer.testing import CliRunner

from hooked_vlm.cli import app
from hooked_vlm.viz.report import figures_in_html

ROOT = Path(__file__).resolve().parents[1]


def _readme_code(section: str) -> str:
    """The first python block after the README heading ``section``."""
    text = (ROOT / "README.md").read_text().split(f"## {section}\n", 1)[1]
    return re.search(r"```python\n(.*?)```", text, re.S).group(1)


def test_readme_quickstart_runs():
    with torch.enable_grad():  # restores the grad mode the quickstart switches off, on exit
        exec(compile(_readme_code("Quickstart"), "README-quickstart", "exec"), {})
    assert torch.is_grad_enabled()



def test_info_shows_layout_and_hooks():
    result = CliRunner().invoke(app, ["info", "tiny:emu3"])
    assert result.exit_code == 0, result.output
    assert "eoi" in result.output and "blocks.{l}.attn.hook_pattern" in result.output
    assert "13, 18, 23, 28" in result.output  # Emu3's end-of-line positions


def test_info_on_unknown_model_fails_clearly(tmp_path, monkeypatch):
    result = CliRunner().invoke(app, ["info", "tiny:nope"])
    assert result.exit_code == 1 and result.exception is None or isinstance(
        result.exception, SystemExit)
    assert "no tiny model 'tiny:nope'" in result.output and "tiny:llava" in result.output
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = CliRunner().invoke(app, ["info", str(tmp_path)])  # a directory with no config
    assert missing.exit_code == 1
    assert "could not read the config" in missing.output and "tiny:llava" in missing.output


def test_demo_runs_on_the_trained_models_writes_its_page_and_resumes(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--models", "tiny-llava", "--attribution-n", "4",
            "--masks", "64", "--n", "6"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "random weights" not in first.output.lower()
    assert "tiny-llava" in first.output and "report:" in first.output
    (row,) = json.loads((out / "summary.json").read_text())
    ng = row["narrow_gate"]
    assert ng["model"] == "tiny-llava" and ng["native"] is False
    assert ng["gate"] == "last image token"
    assert all(0.0 <= s <= 1.0 for s in ng["gate_share"]["per_layer"])
    # the page shows the study's own numbers: read them back from the study's results
    knockout = json.loads((out / "narrow-gate/tiny-llava/results/knockout.json").read_text())
    clean = next(r for r in knockout["values"]["table"] if r["condition"] == "none")
    assert ng["knockout"]["vqa_accuracy"]["clean"] == clean["vqa_accuracy"]
    fit = json.loads((out / "head-attribution/tiny-llava/results/fit.json").read_text())
    ha = row["head_attribution"]
    assert ha["fit"]["pearson"] == fit["values"]["quality"]["pooled_pearson"]
    assert ha["top_heads"] == fit["values"]["top_heads"][:3]
    page = (out / "report.html").read_text()
    assert len(figures_in_html(page)) == 3
    for study in ("narrow-gate", "head-attribution"):
        assert f"{study}/tiny-llava/report.html" in page
        assert (out / study / "tiny-llava" / "report.html").exists()
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    timings = json.loads((out / "narrow-gate/tiny-llava/timings.json").read_text())
    assert all(t["computed"] == 0 for t in timings.values())  # everything was resumed
    other = CliRunner().invoke(app, [*args[:-1], "8"])
    assert other.exit_code == 1 and "different configuration" in other.output

