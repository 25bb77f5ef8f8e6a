"""The Narrow Gate study end to end on tiny random models saved to disk (offline).

One full run on a tiny Chameleon (with EOI) is shared by the property tests; a tiny LLaVA (no
EOI) runs every stage too; a run killed with SIGKILL in a subprocess is resumed and compared
with the uninterrupted one; the CLI runs offline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from hooked_vlm.cli import app
from hooked_vlm.settings import ConfigError
from hooked_vlm.studies import run_study
from hooked_vlm.studies.narrow_gate import NARROW_GATE, NarrowGateConfig, NarrowGateSession
from hooked_vlm.studies.narrow_gate.stage_patching import patch_pairs
from hooked_vlm.testing.study_fixtures import save_tiny_study_data, save_tiny_study_model
from hooked_vlm.viz.report import figures_in_html
from tests.browser import check_report

# small enough for seconds per run, large enough for every analysis (homogeneity needs > 16
# points: 2 x 10 vectors)
FAST = dict(n=10, batch_size=5, caption_tokens=3, vqa_tokens=2, random_repeats=2, random_k=4,
            patch_pairs=4, steering_scales=(0.0, 2.0), progressive_windows=(1, 2, 4),
            cider_tokenizer="simple", pictures=1)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models are overhead-bound: a second thread only contends (10x slower when the
    machine is busy). One thread here, the suite's setting restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("narrow_gate")
    data = save_tiny_study_data(root / "data", n=10)
    models = {f: save_tiny_study_model(f, root / f) for f in ("chameleon", "llava")}
    return root, data, models


def config_for(assets, family: str, **changes) -> NarrowGateConfig:
    _, data, models = assets
    model_dir, yaml_path = models[family]
    return NarrowGateConfig(model=str(model_dir), model_config=str(yaml_path), data=str(data),
                            **{**FAST, **changes})


def run_narrow_gate(config: NarrowGateConfig, out: Path):
    return run_study(NARROW_GATE, config, out)


@pytest.fixture(scope="module")
def run(assets):
    """The uninterrupted reference run on the tiny Chameleon."""
    config = config_for(assets, "chameleon")
    out = assets[0] / "reference"
    summary = run_narrow_gate(config, out)
    return config, out, summary


def results(out: Path, stage: str) -> dict:
    return json.loads((out / "results" / f"{stage}.json").read_text())["values"]


def units(out: Path, prefix: str) -> list[dict[str, np.ndarray]]:
    paths = sorted((out / "units" / prefix).rglob("*.npz"))
    return [dict(np.load(p, allow_pickle=False)) for p in paths]


# ---------------------------------------------------------------------- stage properties


def test_gap_cosines_and_homogeneity_are_well_formed(run):
    _, out, _ = run
    v = results(out, "gap")
    assert v["layers"] == [0, 1, 2, 3] and v["n"] == 10
    for key in ("cosine", "abs_cosine"):
        q25, med, q75 = (np.array(v[key][q]) for q in ("q25", "median", "q75"))
        assert np.all(q25 <= med) and np.all(med <= q75) and np.all(np.abs(med) <= 1)
    assert np.all(np.array(v["abs_cosine"]["median"]) >= 0)
    for scores in v["homogeneity"].values():
        assert len(scores) == 4 and all(0 <= s <= 1 for s in scores)
    text_pos = np.concatenate([u["text_pos"] for u in units(out, "gap")])
    eoi = 2 + 1 + 64  # BOS, two prompt words, BOI, 64 codes: EOI at 68; text after it
    assert np.all(text_pos > eoi)


def test_flow_shares_sum_to_one_and_are_reduced_in_hooks(run):
    _, out, _ = run
    v = results(out, "flow")
    parts = np.array([v["eoi"], v["last_image"], v["salient"], v["internal_image"]])
    assert np.allclose(parts.sum(0), 1.0, atol=1e-5) and np.all(parts >= -1e-7)
    shares = np.load(out / "results" / "flow.npz")["shares"]
    assert shares.shape == (4, 65) and np.allclose(shares.sum(1), 1.0, atol=1e-5)
    assert np.allclose(shares[:, -1], v["eoi"]) and v["key_labels"][-1] == "EOI"
    for unit in units(out, "flow"):  # per unit: [batch, layer, keys], never a pattern
        assert unit["mass"].shape[1:] == (4, 65)
    heat = np.load(out / "results" / "flow.npz")["heat"]
    assert heat.shape == (1, 4, 8, 8) and np.all(heat >= 0)


def test_overlap_records_k_and_stays_in_range(run):
    _, out, _ = run
    v = results(out, "overlap")
    assert set(v["chi"]) == {"eoi", "last_image", "image_mean"}
    assert all(0 <= c <= 1 for curve in v["chi"].values() for c in curve)
    assert v["k"] == 1 and v["k_requested"] == 30 and "smallest class has 1" in v["k_rule"]


def test_knockout_metrics_and_the_mask_floor_closes_the_gate(run):
    config, out, _ = run
    v = results(out, "knockout")
    names = [r["condition"] for r in v["table"]]
    assert names == ["none", "zero/gate", "zero/image", "zero/random", "zero/all",
                     "mask/gate", "mask/image", "mask/random", "mask/all"]
    for row in v["table"]:
        assert all(0 <= row[m] <= 1 for m in ("vqa_accuracy", "chi", "accuracy"))
        assert row["cider"] >= 0
    conds = v["conditions"]
    classify = units(out, "knockout/classify")
    resid = np.concatenate([u["resid"] for u in classify], axis=1)  # [condition, n, d]
    logits = np.concatenate([u["class_logits"] for u in classify], axis=1)
    floor = conds.index("mask/all")
    # every text->image edge masked: the last token no longer depends on the image at all
    assert np.allclose(resid[floor], resid[floor][:1], atol=1e-5)
    assert np.allclose(logits[floor], logits[floor][:1], atol=1e-5)
    # post-softmax zeroing leaks the image through the softmax denominator (REFERENCE.md)
    leak = conds.index("zero/all")
    assert np.abs(resid[leak] - resid[leak][:1]).max() > 1e-4
    texts = units(out, "knockout/caption/mask")
    assert texts[0]["text"].shape == (sum(c.startswith("mask/") for c in conds), 5)


def test_progressive_full_window_equals_full_knockout(run):
    _, out, _ = run
    knock = results(out, "knockout")["conditions"]
    full = np.concatenate([u["resid"] for u in units(out, "knockout/classify")], axis=1)
    prog = np.concatenate([u["resid"] for u in units(out, "progressive")], axis=1)
    names = results(out, "progressive")
    assert names["windows"] == [1, 2, 4]
    order = ["none"] + [f"{m}/{k}/w{w}" for m in ("zero", "mask") for k in ("gate", "image")
                        for w in (1, 2, 4)]
    for mode in ("zero", "mask"):
        for keys in ("gate", "image"):
            assert np.allclose(prog[order.index(f"{mode}/{keys}/w4")],
                               full[knock.index(f"{mode}/{keys}")], atol=1e-5)
    assert np.allclose(prog[0], full[0], atol=1e-5)  # both "none"


def test_patching_rates_and_self_patching_changes_nothing(run):
    config, out, _ = run
    v = results(out, "patching")
    for sweep in ("resid", "attn"):
        assert all(0 <= f <= 1 for f in v[sweep]["flip_rate"])
        assert all(0 <= s <= 1 + 1e-6 for s in v[sweep]["similarity"])
    pairs = units(out, "patching")
    assert all(np.all(u["target"] != u["source"]) for u in pairs)
    session = NarrowGateSession(config, out)
    targets = [0, 1, 2]
    same = patch_pairs(session, [(t, t) for t in targets])
    for sweep in ("resid", "attn"):
        assert np.allclose(same[f"ld_{sweep}"], same["ld_clean"][None], atol=1e-5)
        assert np.allclose(same[f"similarity_{sweep}"], 1.0, atol=1e-5)
    # the attention input of layers 1..3 at EOI does depend on the image: patching it moves LD
    other = patch_pairs(session, [(0, 1), (1, 2)])
    assert np.abs(other["ld_attn"][0] - other["ld_clean"]).max() > 1e-6


def test_steering_at_scale_zero_is_the_clean_model(run):
    _, out, _ = run
    v = results(out, "steering")
    assert v["scales"] == [0.0, 2.0] and v["layers"] == [2]
    steered = units(out, "steering")
    for unit in steered:
        assert np.allclose(unit["ld"][:, 0], unit["ld_clean"][None], atol=1e-5)
    assert all(0 <= f <= 1 for row in v["target_wins"] for f in row)
    assert all(f is None or 0 <= f <= 1 for row in v["flip_toward_target"] for f in row)


def test_report_has_a_section_per_stage_and_data_in_every_figure(run):
    _, out, summary = run
    page = summary.report.read_text()
    figures = figures_in_html(page)
    assert len(figures) == 2 + 3 + 1 + 1 + 2 + 1 + 1
    for figure in figures:
        assert figure["data"], figure["layout"].get("title")
        for trace in figure["data"]:
            assert any(_filled(trace.get(axis)) for axis in ("y", "z")), trace.get("name")
    for title in ("Modality gap", "attention flow", "overlap", "knockout", "Progressive",
                  "patching", "Steering"):
        assert title in page
    assert "compute s (all sessions)" in page and str(summary.out_dir) not in page[:100]


def test_report_draws_in_chromium_without_console_errors(run, browser):
    check_report(browser, run[2].report, min_figures=11)  # tests/browser.py


def _filled(values) -> bool:
    if isinstance(values, dict):  # plotly's typed-array encoding of numpy arrays
        return bool(values.get("bdata"))
    return values is not None and len(values) > 0


# ---------------------------------------------------------------------- robustness


def test_model_without_eoi_runs_every_stage_with_the_last_image_as_gate(assets):
    config = config_for(assets, "llava")
    out = assets[0] / "llava-run"
    summary = run_narrow_gate(config, out)
    assert set(summary.headline) == {"gap", "flow", "overlap", "knockout", "progressive",
                                     "patching", "steering"}
    assert "no end-of-image token" in summary.notes[0]
    assert results(out, "flow")["has_eoi"] is False and results(out, "flow")["eoi"] == [0.0] * 4
    assert set(results(out, "overlap")["chi"]) == {"last_image", "image_mean"}
    assert results(out, "patching")["gate"] == "last_image"
    assert "no end-of-image token" in summary.report.read_text()


def test_stages_without_their_data_are_skipped_or_refused(assets, tmp_path):
    config = config_for(assets, "chameleon").replace(data={"caption": str(assets[1])})
    summary = run_narrow_gate(config, tmp_path / "caption-only")
    assert list(summary.headline) == ["gap", "flow", "knockout"]
    assert any("'overlap' skipped: needs data for classify" in note for note in summary.notes)
    assert set(results(tmp_path / "caption-only", "knockout")["metrics"]) == {"cider"}
    with pytest.raises(ConfigError, match="'steering' cannot run: needs data for classify"):
        run_narrow_gate(config.replace(stages=("steering",)), tmp_path / "caption-only")


def test_config_change_on_an_existing_directory_is_refused(run):
    config, out, _ = run
    with pytest.raises(ConfigError, match="n: 10 there, 8 now"):
        run_narrow_gate(config.replace(n=8), out)


def test_config_parsing(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("model: m\ndata: {caption: a, classify: b}\nstages: [1, knockout]\n")
    config = NarrowGateConfig.from_yaml(path, n=5)
    assert config.stages == ("gap", "knockout") and config.n == 5
    assert "stages" not in config.identity() and config.identity()["data"] == {
        "caption": "a", "classify": "b"}
    with pytest.raises(ConfigError, match="unknown NarrowGateConfig field 'nn'"):
        NarrowGateConfig.from_dict({"model": "m", "data": "d", "nn": 3})
    with pytest.raises(ConfigError, match="unknown stage 'gapp'"):
        NarrowGateConfig(model="m", data="d", stages=("gapp",))
    with pytest.raises(ConfigError, match="knockout_modes"):
        NarrowGateConfig(model="m", data="d", knockout_modes=("inf",))


def test_sigkill_midway_resumes_to_the_same_results(assets, run, tmp_path):
    config, reference, _ = run
    config_path = tmp_path / "study.yaml"
    config_path.write_text(yaml.safe_dump(config.to_dict()))
    out = tmp_path / "killed"
    script = textwrap.dedent("""
        import os, signal, sys, torch
        torch.set_num_threads(1)  # as the reference run (same kernels, same bits)
        from hooked_vlm import storage
        from hooked_vlm.studies import run_study
        from hooked_vlm.studies.narrow_gate import NARROW_GATE, NarrowGateConfig
        saves, original = [0], storage.UnitStore.save
        def save(self, key, arrays, seconds):
            saves[0] += 1
            if saves[0] == 9:  # the 9th unit is computed but never saved
                os.kill(os.getpid(), signal.SIGKILL)
            original(self, key, arrays, seconds)
        storage.UnitStore.save = save
        run_study(NARROW_GATE, NarrowGateConfig.from_yaml(sys.argv[1]), sys.argv[2])
    """)
    killed = subprocess.run([sys.executable, "-c", script, str(config_path), str(out)],
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    markers = {p: p.stat().st_mtime_ns for p in out.rglob("*.done.json")}
    assert len(markers) == 8
    summary = run_narrow_gate(config, out)
    assert all(p.stat().st_mtime_ns == t for p, t in markers.items())  # not recomputed
    total = sum(t.units for t in summary.timings.values())
    assert sum(t.computed for t in summary.timings.values()) == total - 8
    for path in sorted((reference / "units").rglob("*.npz")):
        resumed = np.load(out / path.relative_to(reference), allow_pickle=False)
        original = np.load(path, allow_pickle=False)
        assert resumed.files == original.files
        for name in original.files:
            assert np.array_equal(resumed[name], original[name]), (path, name)
    for stage in summary.headline:
        assert results(out, stage) == results(reference, stage), stage


def test_cli_runs_offline_and_reports(assets, run, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config, reference, _ = run
    config_path = tmp_path / "study.yaml"
    config_path.write_text(yaml.safe_dump({k: v for k, v in config.to_dict().items()
                                           if k not in ("model", "stages")}))
    model = config.model
    fresh = CliRunner().invoke(app, ["run", "narrow-gate", "--config", str(config_path),
                                     "--model", model, "--out", str(tmp_path / "cli"),
                                     "--stages", "gap,2"])
    assert fresh.exit_code == 0, fresh.output
    assert "report:" in fresh.output and (tmp_path / "cli" / "report.html").exists()
    assert "max median cosine" in fresh.output
    # the reference run, resumed through the CLI: nothing left to compute
    again = CliRunner().invoke(app, ["run", "narrow-gate", "--config", str(config_path),
                                     "--model", model, "--out", str(reference)])
    assert again.exit_code == 0, again.output
    timings = json.loads((reference / "timings.json").read_text())
    assert all(t["computed"] == 0 for t in timings.values())
    bad = CliRunner().invoke(app, ["run", "narrow-gate", "--config", str(config_path),
                                   "--model", model, "--out", str(tmp_path / "x"),
                                   "--stages", "nope"])
    assert bad.exit_code == 2 and "unknown stage 'nope'" in bad.output
    assert "narrow-gate" in CliRunner().invoke(app, ["run", "--help"]).output
