"""Bad sources and arguments outside the studies: data files the loaders cannot use, fine-tuning
that would destroy data or save a broken model, the core API's arguments, and interventions
that must compose. Each case names the problem; no case trains or loads a real model."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from hooked_vlm import HookedVLM, InputError
from hooked_vlm.attribution import Evaluator, Example
from hooked_vlm.cli import app
from hooked_vlm.data import SchemaError, load_study_data
from hooked_vlm.interventions import head_ablation, knockout, kv_baseline
from hooked_vlm.settings import ConfigError
from hooked_vlm.training.finetune import FinetuneError, _check_finite, finetune
from tests.conftest import Wrapped, wrap


def _png() -> dict:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


# ---------------------------------------------------------------------- data sources
@pytest.mark.parametrize(("name", "content", "message"), [
    ("bad.jsonl", '{"question": "q", "answers": ["a"]\n', "cannot read .*bad.jsonl: ArrowInvalid"),
    ("empty.jsonl", "", "empty.jsonl is empty"),
    ("empty.csv", "", "empty.csv is empty"),
    ("only_header.csv", "image,captions\n", "only_header.csv holds no rows"),
    ("notes.txt", "hello", "data files must end in"),
])
def test_unreadable_data_files_are_named(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises((ValueError, OSError), match=message):
        load_study_data(str(tmp_path / name))


@pytest.mark.parametrize(("columns", "message"), [
    ({"image": [3, 4], "captions": [["a"], ["b"]]}, "its image column holds Value\\('int64'\\)"),
    ({"image": [_png()] * 2, "captions": [3, 4]},
     "captions \\(Value\\('int64'\\); needs a list of texts\\)"),
    ({"image": [_png()] * 2, "question": [["x"], ["y"]], "answers": [["a"], ["b"]]},
     "question \\(List\\(Value\\('string'\\)\\); needs text\\)"),
])
def test_columns_of_the_wrong_type_are_named(tmp_path, columns, message):
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table(columns), str(path))
    with pytest.raises(SchemaError, match=message):
        load_study_data(str(path))


def test_an_image_folder_is_never_split_by_file_name(tmp_path):
    for label in ("cat", "dog"):
        (tmp_path / "pics" / label).mkdir(parents=True)
        for name in ("test_1.png", "val_2.png", "photo.png"):
            Image.new("RGB", (8, 8)).save(tmp_path / "pics" / label / name)
    data = load_study_data(str(tmp_path / "pics"), task="classify")
    assert len(data) == 6 and sorted(set(data["label"])) == ["cat", "dog"]
    with pytest.raises(ValueError, match="n=7 but .* has only 6 usable examples"):
        load_study_data(str(tmp_path / "pics"), task="classify", n=7)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"task": "ocr"}, "unknown task 'ocr'"), ({"n": 0}, "n must be a positive int"),
    ({"n": True}, "n must be a positive int"), ({"schema": "x"}, "does not apply to the synthetic"),
])
def test_bad_loader_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_study_data("synthetic", **kwargs)


# ---------------------------------------------------------------------- fine-tuning
@pytest.mark.parametrize("existing", ["file", "directory"])
def test_finetune_refuses_to_replace_what_is_at_out(tmp_path, existing):
    out = tmp_path / "ft"
    if existing == "file":
        out.write_text("my notes")
    else:
        out.mkdir()
        (out / "keep.txt").write_text("results")
    result = CliRunner().invoke(app, ["finetune", "--out", str(out), "--steps", "1"])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert ("is a file" if existing == "file" else "exists and is not empty") in text
    assert (out.read_text() if existing == "file" else (out / "keep.txt").read_text()) in (
        "my notes", "results")


@pytest.mark.parametrize(("args", "message"), [
    (["--lr", "inf"], "['lr=inf'] must be finite numbers"),
    (["--lr", "nan"], "['lr=nan'] must be finite numbers"),
    (["--lr", "-0.1"], "['lr=-0.1'] must be positive"),
])
def test_finetune_refuses_options_that_cannot_train(tmp_path, args, message):
    result = CliRunner().invoke(app, ["finetune", "--out", str(tmp_path / "ft"), *args])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "ft").exists()


def test_a_diverged_model_is_never_saved():
    broken = torch.nn.Linear(2, 2)
    with torch.no_grad():
        broken.weight[0, 0] = float("nan")
    with pytest.raises(FinetuneError, match=r"weights \['weight'\] hold NaN/inf.*nothing was"):
        _check_finite([0.5, 0.4], broken)
    with pytest.raises(FinetuneError, match="the loss is nan from step 2"):
        _check_finite([0.5, float("nan")], torch.nn.Linear(2, 2))


def test_finetune_checks_out_before_it_trains(tmp_path):
    (tmp_path / "ft").mkdir()
    (tmp_path / "ft" / "x").write_text("")
    with pytest.raises(FinetuneError, match="exists and is not empty"):
        finetune("tiny-native", tmp_path / "ft", steps=1, log=None)


# ---------------------------------------------------------------------- the core API
@pytest.fixture(scope="module")
def llava() -> Wrapped:
    return wrap("llava")


@pytest.fixture(scope="module")
def embedded() -> HookedVLM:
    return HookedVLM.from_pretrained("tiny-llava")


def test_prepare_without_images_is_refused(embedded):
    with pytest.raises(ValueError, match=r"prepare\(\) got no images"):
        embedded.prepare([], task="classify")


@pytest.mark.parametrize(("pos_slice", "message"), [
    (1000, "pos_slice 1000 is outside the 34 positions"),
    (-35, "pos_slice -35 is outside"), ([0, 40], "pos_slice 40 is outside"),
    ([0.5], "pos_slice 0.5 is outside"),
])
def test_pos_slice_out_of_range_is_refused(llava, pos_slice, message):
    with pytest.raises(InputError, match=message), torch.no_grad():
        llava.model.run_with_cache(llava.inputs, names_filter="blocks.0.hook_resid_post",
                                   pos_slice=pos_slice)


@pytest.mark.parametrize("bad", [2.5, -1, True, "3"])
def test_max_new_tokens_must_be_a_count(llava, bad):
    with pytest.raises(InputError, match=f"max_new_tokens must be an int >= 0.*got {bad!r}"):
        llava.model.generate(llava.inputs, max_new_tokens=bad)


@pytest.mark.parametrize(("answer", "foil"), [(-1, None), (True, None), (3, -2), (2.0, None)])
def test_example_token_ids_must_be_ids(answer, foil):
    with pytest.raises(ConfigError, match="must be a token id \\(an int >= 0\\)"):
        Example({}, answer=answer, foil=foil)


def test_token_ids_outside_the_vocabulary_are_refused(llava):
    from hooked_vlm.attribution import AttributionConfig

    inputs = {k: v[:1] for k, v in llava.inputs.items()}
    vocab = llava.model.cfg.d_vocab
    with pytest.raises(ConfigError, match=f"example 0: token id {vocab} is outside the model's "
                                          f"vocabulary of {vocab}"):
        Evaluator(llava.model, [Example(inputs, answer=vocab)], AttributionConfig(n_masks=8))


def test_baseline_kv_never_revives_an_edge_a_mask_removed(llava):
    """Every text->image edge masked in every layer, then every head's image keys/values
    rewritten by baseline_kv: the text still sees no image, exactly as under the mask alone
    (before the fix, the baseline's scores replaced the mask's -inf)."""
    model, inputs = llava.model, llava.inputs
    layout = model.layout(**inputs)
    with torch.no_grad():
        cut = knockout(model, layout, "text_after_image", "image", mode="mask")
        masked = model.run_with_hooks(inputs, fwd_hooks=cut)
        ablate = torch.zeros(2, model.cfg.n_layers, model.cfg.n_heads)
        both = model.run_with_hooks(inputs, fwd_hooks=[*cut, *head_ablation(
            model, layout, ablate, "baseline_kv", queries="text_after_image", keys="image",
            baseline=kv_baseline(model, inputs))])
        alone = model.run_with_hooks(inputs, fwd_hooks=head_ablation(
            model, layout, ablate, "baseline_kv", queries="text_after_image", keys="image",
            baseline=kv_baseline(model, inputs)))
    torch.testing.assert_close(both, masked, atol=1e-5, rtol=0)
    assert (alone - masked).abs().max() > 1e-3  # the ablation alone does reach the text


def test_cli_errors_are_one_line(tmp_path):
    info = CliRunner().invoke(app, ["info", "tiny:nosuch"])
    assert info.exit_code == 1 and "no tiny model 'tiny:nosuch'" in info.output
    assert "Traceback" not in info.output
    help_text = CliRunner().invoke(app, ["run", "narrow-gate", "--help"]).output
    assert "hooked-vlm[ray]" in " ".join(help_text.replace("│", " ").split())
    bad_yaml = tmp_path / "study.yaml"
    bad_yaml.write_text("model: [tiny\n")
    result = CliRunner().invoke(app, ["run", "narrow-gate", "--config", str(bad_yaml), "--out",
                                      str(tmp_path / "out")])
    assert result.exit_code == 2 and "is not valid YAML (line 2)" in " ".join(
        result.output.split())
    assert not (tmp_path / "out").exists()
