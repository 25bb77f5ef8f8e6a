"""A study written outside the library (tests/own_study.py, the README's "Your own study"):
through ``hooked-vlm run module:STUDY`` it gets its options from its config, a report, resume
after SIGKILL and ``--shard`` with the merge, all bit for bit (Ray: tests/test_engines.py).
Other processes are forked (they start with this one's imports)."""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hooked_vlm.cli import app
from hooked_vlm.storage import UnitStore
from hooked_vlm.studies import run_study
from tests.own_study import STUDY, CutConfig, CutResult

ROOT = Path(__file__).resolve().parents[1]
COMMAND = ["run", "tests.own_study:STUDY", "--n", "3"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("own") / "reference"
    result = CliRunner().invoke(app, [*COMMAND, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


def same_results(a: Path, b: Path) -> None:
    assert CutResult.load(a).logit.tobytes() == CutResult.load(b).logit.tobytes()
    for path in sorted((a / "units").rglob("*.npz")):
        assert path.read_bytes() == (b / path.relative_to(a)).read_bytes(), path


def test_the_cli_takes_its_options_from_the_config_and_reports(reference):
    out, output = reference
    assert "mean logit: cut from layer 0 / never" in output and "report:" in output
    result = CutResult.load(out)
    assert result.first_layer == [0, 1, 2, 3, 4] and result.logit.shape == (5, 3)
    assert (out / "report.html").exists()
    assert "--n" in CliRunner().invoke(app, ["run", "tests.own_study:STUDY", "--help"]).output
    bad = CliRunner().invoke(app, [*COMMAND, "--out", str(out.parent / "x"), "--n", "zero"])
    assert bad.exit_code == 2 and "Invalid value for '--n'" in bad.output


def _killed_at_third_save(out: str) -> None:
    calls, original = [0], UnitStore.save

    def save(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:  # computed, never written
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, *args, **kwargs)

    UnitStore.save = save
    run_study(STUDY, CutConfig(n=3), out)


def _forked(target, *args) -> multiprocessing.Process:
    proc = multiprocessing.get_context("fork").Process(target=target, args=args)
    proc.start()
    return proc


def test_sigkill_then_resume_equals_the_uninterrupted_run(reference, tmp_path):
    out = tmp_path / "killed"
    proc = _forked(_killed_at_third_save, str(out))
    proc.join(timeout=300)
    assert proc.exitcode == -signal.SIGKILL
    markers = {p: p.stat().st_mtime_ns for p in out.rglob("*.done.json")}
    assert len(markers) == 2
    summary = run_study(STUDY, CutConfig(n=3), out)
    assert all(p.stat().st_mtime_ns == t for p, t in markers.items())  # not recomputed
    assert summary.timings["cut"].computed == 3
    same_results(reference[0], out)


def _cli(args: list[str]) -> None:
    result = CliRunner().invoke(app, args)
    os._exit(result.exit_code)  # a forked process: skip pytest's exit handlers


def test_two_shards_then_the_merge_equal_one_run(reference, tmp_path):
    out = tmp_path / "sharded"
    command = [*COMMAND, "--out", str(out)]
    shards = [_forked(_cli, [*command, "--shard", f"{i}/2"]) for i in range(2)]
    for proc in shards:
        proc.join(timeout=300)
        assert proc.exitcode == 0
    assert len(list(out.rglob("*.done.json"))) == 5 and not (out / "results").exists()
    merged = CliRunner().invoke(app, command)
    assert merged.exit_code == 0, merged.output
    same_results(reference[0], out)
    assert np.isfinite(CutResult.load(out).logit).all()


def test_the_readme_shows_this_study_as_it_is():
    readme = (ROOT / "README.md").read_text().split("## Your own study", 1)[1]
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    assert code == (ROOT / "tests" / "own_study.py").read_text()
