"""The README quickstart runs as written; the CLI's info and demo work and the demo resumes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from hooked_vlm.cli import app

ROOT = Path(__file__).resolve().parents[1]


def test_readme_quickstart_runs():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "README-quickstart", "exec"), {})


def test_info_shows_layout_and_hooks():
    result = CliRunner().invoke(app, ["info", "tiny:emu3"])
    assert result.exit_code == 0, result.output
    assert "eoi" in result.output and "blocks.{l}.attn.hook_pattern" in result.output
    assert "13, 18, 23, 28" in result.output  # Emu3's end-of-line positions


def test_info_on_unknown_model_fails_clearly(tmp_path, monkeypatch):
    result = CliRunner().invoke(app, ["info", "tiny:nope"])
    assert result.exit_code != 0
    assert "no tiny model 'nope'" in str(result.exception)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = CliRunner().invoke(app, ["info", str(tmp_path)])  # a directory with no config
    assert missing.exit_code == 1
    assert "could not read the config" in missing.output and "tiny:llava" in missing.output


def test_demo_writes_results_and_resumes(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--models", "chameleon,llava"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "RANDOM" in first.output
    record = json.loads((out / "records" / "chameleon.json").read_text())
    shares = [r["eoi"] for r in record["per_layer"]]
    assert all(0.0 <= s <= 1.0 for s in shares) and record["native"] is True
    assert (out / "chameleon.html").exists() and (out / "summary.tsv").exists()
    overlaps = record["knockout"]
    assert set(overlaps) >= {"EOI", "image (EOI kept)", "image and EOI"}
    assert all(0.0 < v <= 1.0 + 1e-6 for v in overlaps.values())
    assert "EOI" not in json.loads((out / "records" / "llava.json").read_text())["knockout"]
    assert (out / "knockout.tsv").read_text().count("\n") == 1 + len(overlaps) + 3
    patching = record["patching"]
    assert [r["layer"] for r in patching] == list(range(4)) and patching[0]["position"] == "eoi"
    assert all(0.0 < r["overlap_with_source"] <= 1.0 + 1e-6 for r in patching)
    assert (out / "patching.tsv").read_text().count("\n") == 1 + 2 * 4
    assert len((out / "summary.tsv").read_text().splitlines()) == 1 + 2 * 4
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0 and "already done" in second.output
    other = CliRunner().invoke(app, ["demo", "--out", str(out), "--models", "emu3"])
    assert other.exit_code != 0 and "different configuration" in str(other.exception)

