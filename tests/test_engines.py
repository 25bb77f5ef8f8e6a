"""Engines: a local Ray cluster (2 CPUs, one per test module) and a Slurm-style array of
processes give the single-process results bit for bit, also when a worker is killed mid-unit.

Head attribution on a tiny LLaVA (store contents, shared baseline, fitted attributions: a tiny
one-stage study on Ray with a worker killed mid-unit; the whole study through ``hooked-vlm run
head-attribution --ray``) and the Narrow Gate study on a tiny Chameleon (every unit's arrays,
every stage's results).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from hooked_vlm.attribution import (
    MaskStore,
    StoreError,
    fit_store,
    merge_stores,
    open_store,
    run,
    units,
)
from hooked_vlm.cli import app
from hooked_vlm.engines import EngineError, LocalEngine, RayEngine, Shard
from hooked_vlm.studies import StudyJob, run_study
from hooked_vlm.studies.head_attribution import HEAD_ATTRIBUTION, HeadAttributionConfig
from hooked_vlm.studies.narrow_gate import NARROW_GATE, NarrowGateConfig
from hooked_vlm.testing.attribution_fixtures import tiny_evaluator
from hooked_vlm.testing.study_fixtures import save_tiny_study_data, save_tiny_study_model
from tests.engine_jobs import TINY, TinyConfig
from tests.test_head_attribution import FAST as HA_FAST
from tests.test_head_attribution import same_results, same_store

ROOT = Path(__file__).resolve().parents[1]
# workers and subprocesses import tests.engine_jobs and this checkout's hooked_vlm
ENV = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src"),
                                      os.environ.get("PYTHONPATH", "")]),
       "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
CPU_WORKERS = RayEngine(workers=2, gpus_per_worker=0)


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": ENV})
    yield ray
    ray.shutdown()


# ---------------------------------------------------------------------- head attribution


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The single-process run: store and fit."""
    evaluator = tiny_evaluator()
    store = open_store(tmp_path_factory.mktemp("attribution") / "one-process", evaluator)
    assert run(evaluator, store) == len(units(evaluator)) == 15
    assert store.units() == units(evaluator)
    return store


def assert_same_store(store: MaskStore, reference: MaskStore) -> None:
    assert store.meta == reference.meta and not store.missing()
    for split in reference.shapes:
        assert store.targets(split).tobytes() == reference.targets(split).tobytes(), split
    assert store.tensor_names() == reference.tensor_names() == ["stats"]
    stats = (m.tensors("stats", dict) for m in (store, reference))
    assert all(a.equal(b) for a, b in zip(*(s.values() for s in stats), strict=True))
    (fit, quality), (fit_ref, quality_ref) = fit_store(store), fit_store(reference)
    assert fit.coef.tobytes() == fit_ref.coef.tobytes()
    assert fit.pooled_coef.tobytes() == fit_ref.pooled_coef.tobytes()
    assert quality.summary() == quality_ref.summary()


@pytest.mark.ray
def test_ray_workers_give_the_one_process_store_also_when_one_is_killed_mid_unit(
        ray_cluster, reference, tmp_path):
    """``run_study`` on two CPU workers; the first attempt at one unit signals and sleeps, and
    is SIGKILLed from here: Ray restarts that worker (which builds its session again) and
    retries the unit."""
    marker = tmp_path / "victim.pid"
    victim = "train/1/1"
    killed = []

    def kill_when_signalled() -> None:
        while not marker.exists():
            time.sleep(0.05)
        pid = int(marker.read_text())
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killer = threading.Thread(target=kill_when_signalled, daemon=True)
    killer.start()
    summary = run_study(TINY, TinyConfig(victim=victim, marker=str(marker)), tmp_path / "ray",
                        engine=CPU_WORKERS)
    killer.join(timeout=1)
    assert killed, "the victim unit never started"
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)  # that process is gone: another one computed the unit
    store = MaskStore.from_path(tmp_path / "ray" / "store")
    assert store.done(victim) and summary.timings["masks"].computed == len(store.units())
    assert_same_store(store, reference)


def test_shards_into_stores_of_their_own_then_the_merge_give_the_one_process_result(
        reference, tmp_path):
    """Slurm array tasks on different machines each fill a store of their own. (The shards run
    one after the other here: with a store each, separate processes change nothing; the
    Narrow Gate test below runs its shards as two processes on one directory.)"""
    evaluator = tiny_evaluator()
    stores = [tmp_path / f"shard-{i}" for i in range(2)]
    for i, path in enumerate(stores):
        run(evaluator, open_store(path, evaluator), Shard(i, 2).of(units(evaluator)))
    done = [set(MaskStore.from_path(path).units()) - set(MaskStore.from_path(path).missing())
            for path in stores]
    assert done[0].isdisjoint(done[1]) and done[0] | done[1] == set(reference.units())
    assert [len(d) for d in done] == [len(Shard(i, 2).of(reference.units())) for i in range(2)]
    with pytest.raises(StoreError, match="not done"):
        fit_store(MaskStore.from_path(stores[0]))
    assert_same_store(merge_stores(stores, tmp_path / "merged"), reference)
    assert merge_stores(stores, tmp_path / "merged").missing() == []  # merging again: no-op


def test_merge_refuses_stores_of_another_run_or_another_baseline(reference, tmp_path):
    other = MaskStore.open(tmp_path / "other", {"x": 1}, {"train": (3, 48)}, chunk_size=16)
    with pytest.raises(StoreError, match="different runs"):
        merge_stores([reference.path, other.path], tmp_path / "merged")
    odd = MaskStore.open(tmp_path / "odd", reference.meta["run"], reference.shapes, 16)
    stats = reference.tensors("stats", dict)
    odd.tensors("stats", lambda: {k: v + 1 for k, v in stats.items()})
    with pytest.raises(StoreError, match="stats.safetensors differs"):
        merge_stores([reference.path, odd.path], tmp_path / "merged-odd")


@pytest.mark.ray
def test_shard_arguments_and_engine_errors(ray_cluster):
    assert Shard.parse("1/3") == Shard(1, 3) and Shard(1, 3).of(list(range(10))) == [3, 4, 5, 6]
    assert sum((Shard(i, 3).of(list(range(10))) for i in range(3)), []) == list(range(10))
    for bad in ("3/3", "1", "a/b", "-1/2"):
        with pytest.raises(ValueError, match="shard"):
            Shard.parse(bad)
    with pytest.raises(EngineError, match="0 GPU"):
        with RayEngine().start(StudyJob(TINY, TinyConfig(), "unused")):
            pass
    def fails():  # pickled by value: the worker imports no test module
        raise OSError("no such model directory: /nowhere")

    with pytest.raises(EngineError, match="could not build its session(.|\n)*/nowhere"):
        with RayEngine(workers=1, gpus_per_worker=0).start(fails):
            pass
    with LocalEngine().start(lambda: lambda unit: unit % 2 == 0) as pool:
        assert pool.run(range(5)) == 3


@pytest.mark.ray
def test_head_attribution_study_with_its_masks_on_ray_workers_equals_one_process(
        ray_cluster, tmp_path):
    """``hooked-vlm run head-attribution --ray``: two CPU workers compute every unit (the mask
    store and the later stages'), this process loads no weights, reduces and reports; store
    and every stage's results as in one process."""
    data = save_tiny_study_data(tmp_path / "data", n=8)
    model_dir, model_yaml = save_tiny_study_model("llava", tmp_path / "llava")
    config = HeadAttributionConfig.from_dict({"model": str(model_dir), "model_config":
                                              str(model_yaml), "data": str(data), **HA_FAST})
    run_study(HEAD_ATTRIBUTION, config, tmp_path / "one-process")
    config_path = tmp_path / "study.yaml"
    config_path.write_text(yaml.safe_dump(config.to_dict()))
    out = tmp_path / "ray"
    result = CliRunner().invoke(app, ["run", "head-attribution", "--config", str(config_path),
                                      "--out", str(out), "--ray", "auto", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "report:" in result.output
    same_store(out, tmp_path / "one-process")
    same_results(out, tmp_path / "one-process",
                 ("fit", "baselines", "curves", "tokens", "consistency"))


@pytest.mark.ray
def test_a_study_of_ones_own_on_a_ray_worker_equals_one_process(ray_cluster, tmp_path):
    """tests/own_study.py (the README's "Your own study"), untouched: its job pickles, a Ray
    worker builds its session and computes every unit, this process reduces and reports."""
    from tests.own_study import STUDY, CutConfig, CutResult

    run_study(STUDY, CutConfig(n=3), tmp_path / "one")
    summary = run_study(STUDY, CutConfig(n=3), tmp_path / "ray",
                        engine=RayEngine(workers=1, gpus_per_worker=0))
    assert summary.timings["cut"].computed == 5 and summary.report.exists()
    assert CutResult.load(tmp_path / "ray").logit.tobytes() == \
        CutResult.load(tmp_path / "one").logit.tobytes()


# ---------------------------------------------------------------------- Narrow Gate


FAST = dict(n=10, batch_size=5, caption_tokens=3, vqa_tokens=2, random_repeats=2, random_k=4,
            patch_pairs=4, steering_scales=(0.0, 2.0), progressive_windows=(1, 2, 4),
            cider_tokenizer="simple", pictures=1, stages=("knockout", "steering"))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A tiny Chameleon study (knockout, then steering, which reads the overlap stage's
    units) run in one process: the reference."""
    root = tmp_path_factory.mktemp("narrow_gate")
    data = save_tiny_study_data(root / "data", n=10)
    model_dir, yaml_path = save_tiny_study_model("chameleon", root / "chameleon")
    config = NarrowGateConfig(model=str(model_dir), model_config=str(yaml_path), data=str(data),
                              **FAST)
    summary = run_study(NARROW_GATE, config, root / "one-process")
    assert list(summary.headline) == ["overlap", "knockout", "steering"]
    config_path = root / "study.yaml"
    config_path.write_text(yaml.safe_dump(config.to_dict()))
    return config_path, root / "one-process"


def assert_same_study(out: Path, reference: Path) -> None:
    unit_files = sorted((reference / "units").rglob("*.npz"))
    assert len(unit_files) == 2 + 2 * 3 * 2 + 2 + 2  # overlap, knockout (3 tasks), steering
    for path in unit_files:
        with np.load(path) as a, np.load(out / path.relative_to(reference)) as b:
            assert a.files == b.files
            for name in a.files:
                assert a[name].tobytes() == b[name].tobytes(), (path, name)
    for path in sorted((reference / "results").glob("*.json")):
        values = json.loads(path.read_text())["values"]
        assert json.loads((out / "results" / path.name).read_text())["values"] == values


@pytest.mark.ray
def test_narrow_gate_on_ray_workers_equals_one_process(ray_cluster, study, tmp_path,
                                                      monkeypatch):
    """Also with a relative --out: the workers resolve it in the driver's directory."""
    config_path, reference = study
    out = tmp_path / "ray"
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "narrow-gate", "--config", str(config_path),
                                      "--out", "ray", "--ray", "auto", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "report:" in result.output and (out / "report.html").exists()
    assert_same_study(out, reference)
    assert json.loads((out / "session.json").read_text())["device"] == "cpu"


def test_narrow_gate_shards_then_the_merge_equal_one_process(study, tmp_path):
    config_path, reference = study
    out = tmp_path / "array"
    command = [sys.executable, "-m", "hooked_vlm.cli", "run", "narrow-gate", "--config",
               str(config_path), "--out", str(out)]
    procs = [subprocess.Popen([*command, "--shard", f"{i}/2"], env={**os.environ, **ENV},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for i in range(2)]
    outputs = [p.communicate(timeout=300)[0].decode() for p in procs]
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output[-3000:]
        assert "without --shard" in output
    assert not (out / "results").exists() and not (out / "report.html").exists()
    merged = CliRunner().invoke(app, ["run", "narrow-gate", "--config", str(config_path),
                                      "--out", str(out)], env=ENV)
    assert merged.exit_code == 0, merged.output
    assert_same_study(out, reference)
    timings = json.loads((out / "timings.json").read_text())
    # the merge computed only what no shard could: steering units whose overlap was not in yet
    assert timings["overlap"]["computed"] == timings["knockout"]["computed"] == 0


@pytest.mark.parametrize("study_name", ["narrow-gate", "head-attribution"])
def test_cli_engine_options_are_checked(study_name, monkeypatch, tmp_path):
    """Refused before anything is loaded or written."""
    command = ["run", study_name, "--model", "unused", "--data", "synthetic"]
    out = tmp_path / "unused"
    for args, message in ((["--workers", "2"], "add --ray"), (["--shard", "2/2"], "shard"),
                          (["--shard", "1of2"], "'i/N'")):
        result = CliRunner().invoke(app, [*command, "--out", str(out), *args])
        assert result.exit_code == 2 and message in result.output, result.output
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails: Ray not installed
    result = CliRunner().invoke(app, [*command, "--out", str(out), "--ray", "local"])
    assert result.exit_code == 1 and "hooked-vlm[ray]" in result.output, result.output
    assert not out.exists()
