"""The head-attribution study end to end on a tiny random LLaVA saved to disk (offline).

One uninterrupted run is shared by the property tests; the CLI runs offline and writes a report
whose every figure has data; a run killed with SIGKILL (in the mask store, then in a later
stage) resumes to the same numbers; two ``--shard`` processes plus the same command without
``--shard`` equal the single run; a changed config on an existing directory is refused. Other
processes are forked (they start with this one's imports), which keeps the file fast on a busy
machine.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy.stats import spearmanr
from typer.testing import CliRunner

from hooked_vlm import HookedVLM
from hooked_vlm.attribution import MaskStore
from hooked_vlm.cli import app
from hooked_vlm.data import load_study_data
from hooked_vlm.settings import ConfigError
from hooked_vlm.storage import UnitStore
from hooked_vlm.studies import run_study
from hooked_vlm.studies.head_attribution import HEAD_ATTRIBUTION, HeadAttributionConfig
from hooked_vlm.testing.study_fixtures import save_tiny_study_data, save_tiny_study_model
from hooked_vlm.viz.report import figures_in_html
from tests.browser import check_report

# 4 layers x 4 heads; 8 examples of 6 classes (two classes twice); seconds per run
FAST = dict(n=8, masks=48, heldout=24, chunk_size=16, batch_size=16, n_random=2,
            token_examples=2, image_subsets=32, image_heldout=8, permutations=50)
SPLITS = ("train", "heldout", "reference", "loo")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("head_attribution")
    data = save_tiny_study_data(root / "data", n=8)
    model_dir, model_yaml = save_tiny_study_model("llava", root / "llava")
    return root, data, model_dir, model_yaml


def config_for(assets, **changes) -> HeadAttributionConfig:
    _, data, model_dir, model_yaml = assets
    return HeadAttributionConfig.from_dict({"model": str(model_dir), "model_config":
                                            str(model_yaml), "data": str(data),
                                            **FAST, **changes})


def run_head_attribution(config: HeadAttributionConfig, out: Path, **options):
    return run_study(HEAD_ATTRIBUTION, config, out, **options)


@pytest.fixture(scope="module")
def run(assets):
    """The uninterrupted reference run."""
    config = config_for(assets)
    out = assets[0] / "reference"
    summary = run_head_attribution(config, out)
    return config, out, summary


def results(out: Path, stage: str) -> tuple[dict, dict]:
    values = json.loads((out / "results" / f"{stage}.json").read_text())["values"]
    path = out / "results" / f"{stage}.npz"
    return values, (dict(np.load(path, allow_pickle=False)) if path.exists() else {})


def write_yaml(config: HeadAttributionConfig, path: Path, drop: tuple[str, ...] = ()) -> Path:
    path.write_text(yaml.safe_dump({k: v for k, v in config.to_dict().items() if k not in drop}))
    return path


def unit_count(store: MaskStore) -> int:
    return sum(store.n_chunks(split) * n_examples for split, (n_examples, _) in
               store.shapes.items())


def same_store(a: Path, b: Path) -> None:
    for split in SPLITS:
        left, right = np.load(a / "store" / f"{split}.npy"), np.load(b / "store" / f"{split}.npy")
        assert np.isfinite(left).all() and np.array_equal(left, right), split


def same_results(a: Path, b: Path, stages: tuple[str, ...]) -> None:
    for stage in stages:
        (va, aa), (vb, ab) = results(a, stage), results(b, stage)
        assert va == vb, stage
        assert aa.keys() == ab.keys(), stage
        for name in aa:
            assert np.array_equal(aa[name], ab[name], equal_nan=True), (stage, name)


# ---------------------------------------------------------------------- what the stages hold


def test_fit_predicts_held_out_masks_and_pools_the_examples(run):
    _, out, summary = run
    v, a = results(out, "fit")
    assert v["regression"] == "ols" and a["coef"].shape == (8, 4, 4)
    # masks are shared across examples: the OLS fit of the mean target is the mean of the fits
    assert np.allclose(a["pooled_coef"], a["coef"].mean(0), atol=1e-6)
    # each head's effect on the logit adds up nearly linearly in this tiny model
    assert v["quality"]["pooled_pearson"] > 0.9 and v["quality"]["n_heldout"] == 24
    store = MaskStore.from_path(out / "store")
    assert np.array_equal(a["clean"], store.targets("reference")[:, 0])
    assert a["heldout_measured_each"].shape == (8, 24)
    assert [h["score"] for h in v["top_heads"]] == sorted(
        a["pooled_coef"].ravel().tolist(), reverse=True)[:10]
    assert "held-out Pearson / Spearman / R², pooled" in dict(summary.headline["fit"])


def test_baselines_read_the_store_and_attention_is_a_share(run):
    _, out, _ = run
    v, a = results(out, "baselines")
    store = MaskStore.from_path(out / "store")
    clean, alone = store.targets("reference")[:, 0], store.targets("loo")
    assert np.allclose(a["loo"].reshape(8, -1), clean[:, None] - alone)
    assert a["attention"].shape == (8, 4, 4)
    assert np.all((a["attention"] >= 0) & (a["attention"] <= 1 + 1e-6))
    assert -1 <= v["attention"]["pooled_spearman"] <= 1


def test_curves_reach_every_head_and_match_the_store(run, assets):
    config, out, _ = run
    v, a = results(out, "curves")
    assert v["ks"] == [1, 2, 4, 8, 16] and set(v["rankings"]) == {"attribution", "loo",
                                                                   "attention"}
    reference = MaskStore.from_path(out / "store").targets("reference")
    assert np.allclose(a["clean"], reference[:, 0]) and np.allclose(a["ablated"], reference[:, 1])
    for name in v["rankings"]:
        curve = v["summary"][name]
        # keeping all 16 heads is the clean run, ablating all of them the all-ablated one
        assert curve["faithfulness"][-1] == pytest.approx(1.0, abs=1e-4)
        assert curve["completeness"][-1] == pytest.approx(1.0, abs=1e-4)
    # the random draws of k = 16 ablate every head too
    assert np.allclose(a["random_drop"][:, -1], a["clean"] - a["ablated"], atol=1e-5)


def test_token_level_scores_text_positions_and_image_patches(run):
    _, out, _ = run
    v, a = results(out, "tokens")
    assert v["token_heads"] == 2 and len(v["examples"]) == 2
    for entry in v["examples"]:
        # text after the image in "w1 w2 <image> w6 w7": the last token is among them
        assert entry["tokens"] == ["w6", "w7"] and len(entry["heads"]) == 2
        heat = a[f"heat.{entry['example']}"]
        assert heat.shape == (5, 5) and np.isfinite(heat).all()  # tiny LLaVA's 5 x 5 patches
        assert a[f"picture.{entry['example']}"].dtype == np.uint8
        assert entry["image_quality"] is not None


def test_consistency_compares_classes(run):
    _, out, _ = run
    v, a = results(out, "consistency")
    assert sorted(v["counts"].values()) == [1, 1, 1, 1, 2, 2]  # classes cycle over 6 names
    assert set(v["per_class"]) == {c for c, n in v["counts"].items() if n == 2}
    assert a["similarity"].shape == (8, 8) and np.allclose(np.diag(a["similarity"]), 1.0)
    assert v["order_labels"] == sorted(v["order_labels"])
    assert 0 < v["p_value"] <= 1


def test_report_has_every_section_and_data_in_every_figure(run):
    _, out, summary = run
    page = summary.report.read_text()
    figures = figures_in_html(page)
    assert len(figures) >= 9
    for figure in figures:
        assert figure["data"], figure["layout"].get("title")
        for trace in figure["data"]:
            assert any(_filled(trace.get(axis)) for axis in ("y", "z")), trace.get("name")
    for title in ("Head attributions", "Fit quality", "Baselines", "Faithfulness",
                  "Token level", "Semantic consistency"):
        assert title in page
    # the settings Kim et al. do not publish come with every result
    assert page.count("α = 0.5 per mask, N = 48 masks (+24 held out) per example, OLS") >= 10


def _filled(values) -> bool:
    if isinstance(values, dict):  # plotly's typed-array encoding of numpy arrays
        return bool(values.get("bdata"))
    return values is not None and len(values) > 0


# ---------------------------------------------------------------------- robustness


def test_cli_runs_offline_and_reports(assets, run, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config, reference, _ = run
    path = write_yaml(config, tmp_path / "study.yaml", drop=("model", "n", "masks", "alpha"))
    out = tmp_path / "cli"
    fresh = CliRunner().invoke(app, [
        "run", "head-attribution", "--config", str(path), "--model", config.model,
        "--n", "3", "--masks", "32", "--alpha", "0.25", "--out", str(out),
        "--top-k", "1,4"])
    assert fresh.exit_code == 0, fresh.output
    assert "report:" in fresh.output and "top heads" in fresh.output
    assert "random-k" in fresh.output  # the top-k vs random-k rows
    saved = json.loads((out / "config.json").read_text())
    masks = saved["attribution"]
    assert (saved["n"], masks["n_masks"], masks["alpha"], saved["top_k"]) == (3, 32, 0.25, [1, 4])
    figures = figures_in_html((out / "report.html").read_text())
    assert figures and all(f["data"] for f in figures)
    # the reference run, resumed through the CLI: nothing left to compute
    again = CliRunner().invoke(app, ["run", "head-attribution", "--config",
                                     str(write_yaml(config, tmp_path / "ref.yaml")),
                                     "--out", str(reference)])
    assert again.exit_code == 0, again.output
    timings = json.loads((reference / "timings.json").read_text())
    assert all(t["computed"] == 0 for t in timings.values())
    bad = CliRunner().invoke(app, ["run", "head-attribution", "--config", str(path),
                                   "--model", config.model, "--out", str(tmp_path / "x"),
                                   "--alpha", "1.5"])
    assert bad.exit_code == 2 and "alpha" in bad.output
    assert "head-attribution" in CliRunner().invoke(app, ["run", "--help"]).output


def _forked(target, *args) -> multiprocessing.Process:
    """``target(*args)`` in a forked process: it starts with this one's imports and its one
    torch thread (a fresh interpreter would spend seconds importing torch on a busy machine)."""
    proc = multiprocessing.get_context("fork").Process(target=target, args=args)
    proc.start()
    return proc


def _killed_at(cls: type, method: str, nth: int, run_it, *args) -> None:
    """Patch ``cls.method`` (in this forked process only) to SIGKILL the process on its
    ``nth`` call, before it writes, then ``run_it(*args)``."""
    calls, original = [0], getattr(cls, method)

    def write(self, *a, **kw):
        calls[0] += 1
        if calls[0] == nth:  # computed, never written
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, *a, **kw)

    setattr(cls, method, write)
    run_it(*args)


def test_sigkill_midway_resumes_to_the_same_results(assets, run, tmp_path, monkeypatch):
    """Killed once while filling the mask store and once inside a later stage's units; the
    resumed run computes only what is missing and equals the uninterrupted one bit for bit."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config, reference, _ = run
    out = tmp_path / "killed"
    for cls, method, nth in ((MaskStore, "save", 7), (UnitStore, "save", 3)):
        proc = _forked(_killed_at, cls, method, nth, run_head_attribution, config, out)
        proc.join(timeout=300)
        assert proc.exitcode == -signal.SIGKILL, (cls, method)
    store = MaskStore.from_path(out / "store")
    assert not store.missing()  # the second run finished the masks, then died in a stage
    markers = {p: p.stat().st_mtime_ns for p in (out / "units").rglob("*.done.json")}
    assert len(markers) == 2
    summary = run_head_attribution(config, out)
    assert all(p.stat().st_mtime_ns == t for p, t in markers.items())  # not recomputed
    assert summary.timings["masks"].computed == 0
    total = sum(t.units for name, t in summary.timings.items() if name != "masks")
    assert sum(t.computed for name, t in summary.timings.items() if name != "masks") == total - 2
    same_store(reference, out)
    same_results(reference, out, ("fit", "baselines", "curves", "tokens", "consistency"))


def _cli(args: list[str]) -> None:
    result = CliRunner().invoke(app, args)
    if result.exit_code != 0:
        print(result.output)
    os._exit(result.exit_code)  # a forked process: skip pytest's exit handlers


def test_two_shards_then_the_merge_equal_one_run(assets, run, tmp_path, monkeypatch):
    """Shard 1/2 in another process while shard 0/2 runs in this one, into one store; then
    the same command without --shard."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config, reference, _ = run
    path = write_yaml(config, tmp_path / "study.yaml")
    out = tmp_path / "sharded"
    command = ["run", "head-attribution", "--config", str(path), "--out", str(out)]
    other = _forked(_cli, [*command, "--shard", "1/2"])
    here = CliRunner().invoke(app, [*command, "--shard", "0/2"])
    other.join(timeout=300)
    assert here.exit_code == 0 and other.exitcode == 0, here.output
    assert "without --shard" in here.output and not (out / "report.html").exists()
    assert MaskStore.from_path(out / "store").missing() == []
    merged = CliRunner().invoke(app, command)
    assert merged.exit_code == 0, merged.output
    timings = json.loads((out / "timings.json").read_text())
    assert (out / "report.html").exists() and timings["masks"]["computed"] == 0
    same_store(reference, out)
    same_results(reference, out, ("fit", "baselines", "curves", "tokens", "consistency"))
    report = (out / "report.html").read_text()
    assert "masks (shard 0/2)" in report and "masks (shard 1/2)" in report


def test_a_shard_fills_its_block_and_reduces_nothing(assets, tmp_path):
    config = config_for(assets)
    out = tmp_path / "half"
    summary = run_head_attribution(config, out, shard="0/2")
    store = MaskStore.from_path(out / "store")
    missing = len(store.missing())
    assert 0 < missing < unit_count(store) and summary.report is None
    assert not (out / "results").exists() and not (out / "session.json").exists()
    assert any("other shards are still computing" in note for note in summary.notes)


def test_config_change_on_an_existing_directory_is_refused(run):
    config, out, _ = run
    with pytest.raises(ConfigError, match="attribution.n_masks: 48 there, 64 now"):
        run_head_attribution(config.replace(attribution=config.attribution.replace(n_masks=64)),
                             out)
    # where it runs is not part of the run's identity
    assert "device" not in config.identity() and "stages" not in config.identity()


def test_config_parsing(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("model: m\ndata: d\nalpha: 0.25\nstages: [2, curves]\ntop_k: [1, 3]\n")
    config = HeadAttributionConfig.from_yaml(path, n=5)
    assert (config.attribution.alpha, config.attribution.k, config.n) == (0.25, None, 5)
    assert config.stages == ("fit", "curves") and config.top_k == (1, 3)
    by_k = HeadAttributionConfig.from_yaml(path, k=3)  # k given: the file's alpha is dropped
    assert (by_k.attribution.alpha, by_k.attribution.k) == (None, 3)
    default = HeadAttributionConfig(model="m", data="d")
    assert default.attribution.alpha == 0.5 and default.attribution.leave_one_out
    # the study's attribution defaults hold under fields given on top of them
    assert HeadAttributionConfig.from_dict({"model": "m", "data": "d", "masks": 9}).attribution \
        == default.attribution.replace(n_masks=9)
    assert HeadAttributionConfig.from_dict(config.to_dict()) == config  # nested form reads back
    with pytest.raises(ConfigError, match="exactly one of alpha"):
        HeadAttributionConfig.from_dict({"model": "m", "data": "d", "alpha": 0.5, "k": 3})
    with pytest.raises(ConfigError, match="field 'mask'. Did you mean 'masks'"):
        HeadAttributionConfig.from_dict({"model": "m", "data": "d", "mask": 3})
    with pytest.raises(ConfigError, match="unknown stage 'fitt'"):
        HeadAttributionConfig(model="m", data="d", stages="fitt")
    with pytest.raises(ConfigError, match="regression must be one of"):
        HeadAttributionConfig(model="m", data="d", regression="svm")
    with pytest.raises(ConfigError, match="takes no regularization"):
        HeadAttributionConfig(model="m", data="d", regularization=0.1)
    with pytest.raises(ConfigError, match="mode must be one of"):
        HeadAttributionConfig.from_dict({"model": "m", "data": "d", "mode": "inf"})


def test_settings_the_model_cannot_serve_are_refused(assets, tmp_path):
    with pytest.raises(ConfigError, match=r"top_k \[17\]: the model has 16 heads"):
        run_head_attribution(config_for(assets, top_k=(1, 17)), tmp_path / "a")
    with pytest.raises(ConfigError, match="token_heads 20: the model has 16 heads"):
        run_head_attribution(config_for(assets, token_heads=20), tmp_path / "b")


def test_the_embedded_tiny_llava_clean_target_is_its_answer_logit(tmp_path, monkeypatch):
    """On the trained tiny-llava and the synthetic shapes: the all-kept reference mask of the
    store is the model's own logit of the label's token at the last position (a plain forward
    of the model-config prompt), and the fit's coefficients are finite."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = HeadAttributionConfig.from_dict({"model": "tiny-llava", "data": "synthetic", "n": 2,
                                              "masks": 32, "heldout": 8, "chunk_size": 32,
                                              "stages": ("fit",)})
    summary = run_head_attribution(config, tmp_path / "tiny")
    assert set(summary.timings) == {"masks", "fit"}
    session_info = json.loads((tmp_path / "tiny" / "session.json").read_text())
    model = HookedVLM.from_pretrained("tiny-llava")
    data = load_study_data("synthetic", n=2, seed=0, task="classify")
    reference = MaskStore.from_path(tmp_path / "tiny" / "store").targets("reference")
    for i, row in enumerate(data):
        prompt = model.model_config.prompt("classify", question=row["question"])
        with torch.no_grad():
            logits = model(**model.prepare([row["image"]], [prompt]))
        answer = session_info["examples"]["answer_id"][i]
        assert model.tokenizer.decode([answer]).strip() == str(row["label"])
        assert reference[i, 0] == pytest.approx(float(logits[0, -1, answer]), abs=1e-4)
    _, fit = results(tmp_path / "tiny", "fit")
    assert fit["coef"].shape == (2, 4, 4) and np.isfinite(fit["coef"]).all()


# ---------------------------------------------------------------------- --method atp / both


@pytest.fixture(scope="module")
def both(assets):
    """Attribution patching beside the regression: the stages the comparison needs."""
    config = config_for(assets, method="both", stages="compare,curves")
    out = assets[0] / "both"
    return config, out, run_head_attribution(config, out)


def test_method_both_leaves_the_regression_as_it_was_and_compares(run, both, browser):
    _, reference, _ = run
    _, out, summary = both
    assert list(summary.timings) == ["masks", "fit", "baselines", "atp", "compare", "curves"]
    same_store(reference, out)
    same_results(reference, out, ("fit", "baselines"))
    (v, a), (v_reg, a_reg) = results(out, "curves"), results(reference, "curves")
    assert list(v["rankings"]) == ["attribution", "loo", "attention", "atp", "atp_star"]
    for name in v_reg["rankings"]:  # the regression's curves, untouched by AtP beside them
        assert np.array_equal(a[f"topk_drop.{name}"], a_reg[f"topk_drop.{name}"])
    for name in ("atp", "atp_star"):  # every head ranked: all 16 kept is the clean run
        assert v["summary"][name]["faithfulness"][-1] == pytest.approx(1.0, abs=1e-4)
    # the agreement, recomputed from the stored scores
    _, atp = results(out, "atp")
    _, fit = results(out, "fit")
    _, baselines = results(out, "baselines")
    cmp, _ = results(out, "compare")
    pairs = {"AtP* / β": (atp["corrected"], fit["coef"]), "AtP / β": (atp["linear"], fit["coef"]),
             "AtP* / leave-one-out": (atp["corrected"], baselines["loo"])}
    for pair, (x, y) in pairs.items():
        rho = spearmanr(x.mean(0).ravel(), y.mean(0).ravel()).statistic
        assert cmp["spearman"][pair]["pooled_spearman"] == pytest.approx(rho)
        overlap = cmp["overlap"][pair]["pooled"]
        assert len(overlap) == 5 and overlap[-1] == 1.0 and all(0 <= o <= 1 for o in overlap)
        best = set(np.argsort(-x.mean(0).ravel(), kind="stable")[:4]) & set(
            np.argsort(-y.mean(0).ravel(), kind="stable")[:4])
        assert overlap[2] == len(best) / 4  # k = 4
    assert any("Spearman(AtP* / β)" in row[0] for row in summary.headline["compare"])
    page = summary.report.read_text()
    assert "Attribution patching (AtP)" in page and "Faithfulness" in page
    assert "AtP*" in page and "top-4 overlap, pooled" in page
    figures = figures_in_html(page)
    assert any("AtP* against other rankings" in str(f["layout"].get("title")) for f in figures)
    check_report(browser, out / "report.html", min_figures=len(figures))


def test_method_atp_runs_no_masks_and_draws_its_curves(assets, both, tmp_path, browser):
    _, both_out, _ = both
    config = config_for(assets, method="atp")
    out = tmp_path / "atp"
    summary = run_head_attribution(config, out)
    assert list(summary.timings) == ["atp", "curves"]
    assert not (out / "store").exists()  # no mask was evaluated
    assert any("'masks' skipped: method 'atp'" in note for note in summary.notes)
    (_, a), (_, a_both) = results(out, "atp"), results(both_out, "atp")
    for name in ("linear", "corrected", "clean"):  # the same units, whatever runs beside them
        assert np.array_equal(a[name], a_both[name]), name
    (v, c), (_, c_both) = results(out, "curves"), results(both_out, "curves")
    assert list(v["rankings"]) == ["atp", "atp_star"]
    for name in v["rankings"]:
        assert np.array_equal(c[f"topk_drop.{name}"], c_both[f"topk_drop.{name}"])
    assert any("top-k by AtP / random-k" in row[0] for row in summary.headline["curves"])
    page = summary.report.read_text()
    assert "Attribution patching (AtP)" in page and "not run (attribution patching only)" in page
    check_report(browser, out / "report.html", min_figures=3)
    # resumable as every stage: a unit lost is recomputed to the same numbers, nothing else is
    unit = out / "units" / "atp" / "0002"
    before = np.load(unit.with_suffix(".npz"))["corrected"]
    unit.with_suffix(".done.json").unlink()
    again = run_head_attribution(config, out)
    assert {name: t.computed for name, t in again.timings.items()} == {"atp": 1, "curves": 0}
    assert np.array_equal(np.load(unit.with_suffix(".npz"))["corrected"], before)
    # the method is part of the run: a regression into this directory is refused
    with pytest.raises(ConfigError, match="method"):
        run_head_attribution(config_for(assets), out)


def test_a_regression_keeps_its_identity_and_bad_methods_are_refused(assets, tmp_path):
    default = config_for(assets)
    assert "method" not in default.identity() and "atp_recompute" not in default.identity()
    assert default.identity() == config_for(assets, method="regression").identity()
    assert config_for(assets, method="both").identity()["method"] == "both"
    with pytest.raises(ConfigError, match="method must be one of"):
        config_for(assets, method="gradient")
    with pytest.raises(ConfigError, match="atp_recompute is a setting of attribution patching"):
        config_for(assets, atp_recompute=3)
    with pytest.raises(ConfigError, match="mode 'zero' ablates the head output itself"):
        config_for(assets, method="atp", atp_recompute=3, mode="zero")
    for changes, message in (({"atp_recompute": 17}, "atp_recompute 17: the model has 16"),
                             ({"stages": "fit"}, "stage 'fit' cannot run: method 'atp'")):
        out = tmp_path / "refused"
        with pytest.raises(ConfigError, match=message):
            run_head_attribution(config_for(assets, method="atp", **changes), out)
        assert not out.exists()  # refused before anything was written
    bad = CliRunner().invoke(app, ["run", "head-attribution", "--model", default.model,
                                   "--data", default.data, "--method", "gradient",
                                   "--out", str(tmp_path / "cli")])
    assert bad.exit_code == 2 and "method" in bad.output and not (tmp_path / "cli").exists()
