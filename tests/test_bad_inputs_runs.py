"""Runs that went wrong: a start that fails writes nothing and never blocks the corrected
command; a directory or store made with other weights is refused; damaged units and stores are
recomputed or named. The study runs are tests/own_study.py on the embedded tiny-llava (five
cheap units), the store cases a planted evaluator (no model)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from hooked_vlm.attribution import MaskStore, open_store, run, units
from hooked_vlm.cli import app
from hooked_vlm.settings import ConfigError
from hooked_vlm.storage import StoreError
from hooked_vlm.studies import run_study
from hooked_vlm.testing.attribution_fixtures import tiny_evaluator
from tests.attribution_fakes import standard_planted
from tests.own_study import STUDY, CutConfig, CutResult

OWN = ["run", "tests.own_study:STUDY", "--n", "2"]
HA = ["run", "head-attribution", "--model", "tiny-llava", "--data", "synthetic", "--n", "2"]
NG = ["run", "narrow-gate", "--model", "tiny-native", "--data", "synthetic", "--n", "2"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("bad_runs") / "reference"
    run_study(STUDY, CutConfig(n=2), out)
    return out


def _refused(args: list[str], out, *messages: str, code: int = 1) -> None:
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    text = " ".join(result.output.split())
    assert result.exit_code == code, result.output
    for message in messages:
        assert message in text, result.output
    assert not out.exists(), "a failed start wrote files"


# ---------------------------------------------------------------------- a failed start
@pytest.mark.parametrize(("args", "messages"), [
    (["run", "tests.own_study:STUDY", "--model", "no-such-model"],
     ["cannot run", "model 'no-such-model'"]),
    ([*HA[:-4], "--data", "nowhere/at/all", "--n", "2"], ["data:", "nowhere/at/all"]),
    ([*NG, "--layers", "0,9"], ["layers [0, 9]: the model has 4 layers"]),
    ([*NG, "--steering-layers", "1", "--layers", "0"], ["steering_layers [1] are not among"]),
    ([*NG, "--progressive-windows", "9"], ["progressive_windows [9]: the model has only 4"]),
    ([*HA, "--k", "16"], ["k = 16: the model has 16 heads"]),
    ([*HA, "--top-k", "1,99"], ["top_k [99]: the model has 16 heads"]),
    ([*HA, "--token-heads", "40"], ["token_heads 40: the model has 16 heads"]),
    ([*HA, "--masks", "8"], ["masks = 8: the OLS fit has 17 unknowns", "ridge/lasso"]),
    ([*HA, "--target", "logit_diff", "--n", "1"], ["target 'logit_diff' needs examples"]),
    ([*NG, "--stages", "steering", "--data", "nowhere"], ["data for caption"]),
])
def test_a_start_that_cannot_run_writes_nothing(tmp_path, args, messages):
    _refused(args, tmp_path / "out", *messages)


def test_too_few_masks_for_a_regularised_fit_are_noted_loudly():
    from hooked_vlm.studies.head_attribution import HeadAttributionConfig, HeadAttributionSession

    config = HeadAttributionConfig.from_dict({"model": "tiny-llava", "data": "synthetic", "n": 1,
                                              "masks": 8, "regression": "ridge"})
    session = HeadAttributionSession(config, "unused", weights=False)
    assert any("masks = 8 < 17 unknowns" in note for note in session.notes)


def test_device_without_the_hardware_is_refused_before_loading(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    _refused([*HA, "--device", "cuda"], tmp_path / "out", "CUDA is not available here")
    _refused([*HA, "--device", "tpu"], tmp_path / "out", "device 'tpu' is not a device name",
             code=2)


def test_n_larger_than_a_local_folder_is_refused(tmp_path):
    from hooked_vlm.testing.study_fixtures import save_tiny_study_data

    data = save_tiny_study_data(tmp_path / "data", n=3)
    _refused([*HA[:-4], "--data", str(data), "--n", "5"], tmp_path / "out",
             "n=5 but", "has only 3 usable examples")


def test_a_directory_a_failed_run_left_is_taken_over(reference, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"study": "image-cut", "n": 99}))
    (out / "session.json").write_text("{}")  # what an older, failed first run left
    run_study(STUDY, CutConfig(n=2), out)
    assert json.loads((out / "config.json").read_text())["n"] == 2
    assert CutResult.load(out).logit.tobytes() == CutResult.load(reference).logit.tobytes()


# ---------------------------------------------------------------------- other weights
def test_the_same_checkpoint_path_with_other_weights_is_refused(tmp_path):
    """A checkpoint fine-tuned in place (same path, same config): the rerun is refused."""
    import shutil

    from safetensors.torch import load_file

    import hooked_vlm

    checkpoint, out = tmp_path / "model", tmp_path / "out"
    shutil.copytree(Path(hooked_vlm.__file__).parent / "embedded" / "tiny-llava", checkpoint)
    args = ["run", "head-attribution", "--model", str(checkpoint), "--model-config",
            "tiny-llava", "--data", "synthetic", "--n", "1", "--masks", "17", "--heldout", "0",
            "--no-leave-one-out", "--stages", "masks", "--out", str(out)]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    weights = load_file(str(checkpoint / "model.safetensors"))
    name = next(n for n in sorted(weights) if "layers.0" in n and n.endswith("q_proj.weight"))
    weights[name] = weights[name] + 1e-3  # fine-tuned in place
    save_file(weights, str(checkpoint / "model.safetensors"), metadata={"format": "pt"})
    again = CliRunner().invoke(app, args)
    text = " ".join(again.output.split())
    assert again.exit_code == 1 and "fingerprint.weights:" in text, again.output
    assert "another checkpoint" in text


def test_a_fine_tuned_model_is_told_apart_from_its_base(tmp_path):
    """Same architecture, same config, other weights: the store refuses them."""
    base = tiny_evaluator(n_examples=1)
    store = open_store(tmp_path, base)
    run(base, store, units(base)[:1])
    tuned = tiny_evaluator(n_examples=1)
    with torch.no_grad():
        next(tuned.model.hf_model.parameters()).add_(1e-3)  # a fine-tune, in effect
    with pytest.raises(StoreError, match=r"run.model.fingerprint.weights: stored 'blake2b:"):
        open_store(tmp_path, tuned)


def test_results_of_other_weights_are_refused_naming_the_fingerprint(reference, tmp_path):
    config = json.loads((reference / "config.json").read_text())
    config["fingerprint"]["weights"] = "blake2b:0000"  # as if computed with other weights
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(config))
    (out / "units").mkdir()
    for path in (reference / "units").rglob("*"):
        target = out / "units" / path.relative_to(reference / "units")
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            target.write_bytes(path.read_bytes())
    with pytest.raises(ConfigError, match=r"fingerprint.weights: 'blake2b:0000' there.*another "
                                          "checkpoint"):
        run_study(STUDY, CutConfig(n=2), out)


# ---------------------------------------------------------------------- damage
def _copy_run(reference, out):
    for path in reference.rglob("*"):
        target = out / path.relative_to(reference)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())


@pytest.mark.parametrize("damage", ["truncate", "zeros"])
def test_a_damaged_unit_is_computed_again(reference, tmp_path, damage):
    out = tmp_path / "out"
    _copy_run(reference, out)
    (out / "results" / "cut.json").unlink()
    unit = out / "units" / "cut" / "02.npz"
    data = unit.read_bytes()
    unit.write_bytes(data[:50] if damage == "truncate" else bytes(len(data)))
    summary = run_study(STUDY, CutConfig(n=2), out)
    assert summary.timings["cut"].computed == 1
    assert CutResult.load(out).logit.tobytes() == CutResult.load(reference).logit.tobytes()


@pytest.fixture()
def planted_store(tmp_path):
    evaluator = standard_planted()
    store = open_store(tmp_path, evaluator)
    run(evaluator, store, units(evaluator)[:6])
    return evaluator, tmp_path


def test_a_truncated_store_array_is_refused_not_zero_extended(planted_store):
    evaluator, path = planted_store
    data = (path / "train.npy").read_bytes()
    (path / "train.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match=r"train.npy is damaged: .* \(a truncated or "
                                         r"overwritten file\)"):
        open_store(path, evaluator)
    assert (path / "train.npy").stat().st_size == len(data) // 2  # not extended


def test_garbage_values_of_the_same_size_are_not_trusted(planted_store):
    evaluator, path = planted_store
    done = units(evaluator)[:6]
    array = np.load(path / "train.npy", mmap_mode="r+")
    array[:] = np.random.default_rng(0).normal(size=array.shape) * 1e30
    array.flush()
    del array
    store = open_store(path, evaluator)
    assert not any(store.done(key) for key in done if key.startswith("train/"))
    assert run(evaluator, store) > 0 and not store.missing()


def test_damaged_meta_and_shared_tensors_are_named(planted_store):
    evaluator, path = planted_store
    (path / "meta.json").write_text('{"format": 2, "run"')
    with pytest.raises(StoreError, match="meta.json is damaged \\(not JSON\\)"):
        MaskStore.from_path(path)
    save_file({"x": torch.zeros(3)}, str(path / "stats.safetensors"))
    (path / "stats.safetensors.sum").write_text("0" * 32)
    from hooked_vlm.attribution.store import read_tensors

    with pytest.raises(StoreError, match="stats.safetensors is damaged \\(checksum mismatch"):
        read_tensors(path / "stats.safetensors")
    (path / "stats.safetensors").write_bytes(b"\x10\x00")
    (path / "stats.safetensors.sum").unlink()
    with pytest.raises(StoreError, match="stats.safetensors cannot be read"):
        read_tensors(path / "stats.safetensors")


def test_a_full_disk_is_an_error_naming_the_file_not_a_crash(tmp_path, monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(StoreError, match=r"cannot create .*train.npy .* No space left"):
        open_store(tmp_path, standard_planted())
