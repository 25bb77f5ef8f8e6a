"""Bad configuration, refused at the edge with a message that names the problem: typed fields
(YAML strings for booleans, booleans for counts), ranges, unknown names, broken YAML, the
command line's text options. No model is loaded: every case is milliseconds."""

from __future__ import annotations

import pytest

from hooked_vlm.attribution import AttributionConfig
from hooked_vlm.engines import Shard
from hooked_vlm.settings import ConfigError
from hooked_vlm.studies.command import parse_text
from hooked_vlm.studies.demo import DemoConfig
from hooked_vlm.studies.head_attribution import HeadAttributionConfig
from hooked_vlm.studies.narrow_gate import NarrowGateConfig

BASE = {"model": "m", "data": "synthetic"}


def _ha(**values):
    return HeadAttributionConfig.from_dict({**BASE, **values})


def _ng(**values):
    return NarrowGateConfig.from_dict({**BASE, **values})


@pytest.mark.parametrize(("values", "message"), [
    ({"leave_one_out": "false"}, "leave_one_out must be true or false, got 'false' (a string"),
    ({"reuse_prefix": 0}, "reuse_prefix must be true or false, got 0"),
    ({"n": True}, "n must be an int, got True (a bool)"),
    ({"n": 4.5}, "n must be an int, got 4.5"),
    ({"n": "4"}, "n must be an int, got '4'"),
    ({"n": 0}, "n must be >= 1, got 0"),
    ({"masks": -5}, "n_masks must be >= 1, got -5"),
    ({"heldout": -1}, "n_heldout must be >= 0, got -1"),
    ({"seed": -3}, "seed must be >= 0, got -3"),
    ({"alpha": 1.5}, "alpha is the ablation probability, strictly between 0 and 1; got 1.5"),
    ({"alpha": float("nan")}, "alpha must be a finite number, got nan"),
    ({"alpha": "half"}, "alpha must be a number, got 'half'"),
    ({"k": 0}, "k must be >= 1 (k = 0 never ablates a head"),
    ({"alpha": 0.5, "k": 3}, "give exactly one of alpha"),
    ({"mode": "inf"}, "mode must be one of baseline_kv, zero, mean, knockout; got 'inf'"),
    ({"baseline": "noise"}, "baseline must be one of mean, blank, zeros; got 'noise'"),
    ({"target": "prob"}, "target must be one of logit, logprob, logit_diff; got 'prob'"),
    ({"task": "detect"}, "task must be one of classify, vqa, caption; got 'detect'"),
    ({"regression": "svm"}, "regression must be one of ols, ridge, lasso; got 'svm'"),
    ({"regularization": 0.1}, "regression 'ols' takes no regularization"),
    ({"regression": "ridge", "regularization": -1.0}, "regularization must be > 0, got -1.0"),
    ({"top_k": 4}, "top_k must be a list, got 4"),
    ({"top_k": [1, 0]}, "top_k entries must be >= 1, got 0"),
    ({"top_k": []}, "top_k is empty"),
    ({"top_k": [1, "two"]}, "top_k[1] must be an int, got 'two'"),
    ({"image_alpha": 1.0}, "image_alpha is an ablation probability in (0, 1), got 1.0"),
    ({"token_heads": 0}, "token_heads must be >= 1, got 0"),
    ({"consistency_metric": "l2"}, "consistency_metric must be one of cosine, pearson"),
    ({"device": "gpu"}, "device 'gpu' is not a device name: use cpu, cuda, cuda:1"),
    ({"device": 0}, "device must be a string, got 0"),
    ({"stages": "fitt"}, "unknown stage 'fitt'; stages: 1=masks, 2=fit"),
    ({"stages": "9"}, "unknown stage '9'"),
    ({"mask": 3}, "unknown HeadAttributionConfig field 'mask'. Did you mean 'masks'?"),
    ({"attribution": 5}, "attribution must be a mapping of AttributionConfig fields, got 5"),
    ({"attribution": {"chunk": 8}}, "unknown AttributionConfig field 'chunk'"),
])
def test_head_attribution_config_names_the_bad_field(values, message):
    with pytest.raises(ConfigError) as err:
        _ha(**values)
    assert message in str(err.value)


@pytest.mark.parametrize(("values", "message"), [
    ({"overlap_class_balanced": "yes"}, "overlap_class_balanced must be true or false"),
    ({"batch_size": False}, "batch_size must be an int, got False (a bool)"),
    ({"caption_tokens": -1}, "caption_tokens must be >= 1, got -1"),
    ({"pictures": -2}, "pictures must be >= 0, got -2"),
    ({"knockout_modes": ["zero", "inf"]}, "knockout_modes[1] must be one of zero, mask"),
    ({"knockout_modes": ["zero", "zero"]}, "give zero and/or mask, each once"),
    ({"knockout_modes": "zero"}, "knockout_modes must be a list, got 'zero'"),
    ({"steering_scales": []}, "steering_scales is empty"),
    ({"steering_scales": [0, "x"]}, "steering_scales[1] must be a number, got 'x'"),
    ({"progressive_windows": [0]}, "progressive_windows entries must be >= 1, got 0"),
    ({"flow_threshold": 1.5}, "flow_threshold must lie in (0, 1), got 1.5"),
    ({"cider_tokenizer": "java"}, "cider_tokenizer must be one of ptb, simple; got 'java'"),
    ({"homogeneity_presets": ["neurips", "v2"]}, "homogeneity_presets[1] must be one of"),
    ({"data": {"caption": "a", "ocr": "b"}}, "data has unknown task(s) ['ocr']"),
    ({"data": {}}, "data is empty"),
    ({"data": 7}, "data must be a string or a mapping, got 7"),
    ({"splits": {"detect": "x"}}, "splits has unknown task(s) ['detect']"),
    ({"layers": [0, 1.5]}, "layers[1] must be an int, got 1.5"),
    ({"nn": 3}, "unknown NarrowGateConfig field 'nn'. Did you mean 'n'?"),
])
def test_narrow_gate_config_names_the_bad_field(values, message):
    with pytest.raises(ConfigError) as err:
        _ng(**values)
    assert message in str(err.value)


def test_missing_model_and_data_are_named():
    with pytest.raises(ConfigError, match="the config needs model, data"):
        NarrowGateConfig.from_dict({"n": 4})


@pytest.mark.parametrize(("text", "message"), [
    ("n: [1, 2\n", "is not valid YAML (line 2)"),
    ("- model: m\n", "a config file is a YAML mapping of field: value, got a list"),
    ("model: m\ndata: synthetic\nleave_one_out: 'false'\n", "leave_one_out must be true or"),
    ("model: m\ndata: synthetic\nmasks: 1e3\n", "n_masks must be an int, got '1e3'"),
])
def test_yaml_files_with_bad_values_are_refused(tmp_path, text, message):
    path = tmp_path / "study.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        HeadAttributionConfig.from_yaml(path)
    assert message in str(err.value)


def test_a_missing_yaml_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the config file .*nope.yaml"):
        HeadAttributionConfig.from_yaml(tmp_path / "nope.yaml")


@pytest.mark.parametrize(("name", "hint", "text", "message"), [
    ("top_k", tuple[int, ...] | None, "1,x", "--top-k takes comma-separated ints, got '1,x'"),
    ("steering_scales", tuple[float, ...], "0,big", "--steering-scales takes comma-separated"),
    ("splits", dict[str, str], "caption", "--splits takes key=value pairs"),
])
def test_command_line_lists_and_mappings_name_the_option(name, hint, text, message):
    with pytest.raises(ConfigError, match=message):
        parse_text(name, hint, text)


def test_command_line_text_becomes_typed_values():
    assert parse_text("top_k", tuple[int, ...] | None, "1, 2,4") == [1, 2, 4]
    assert parse_text("splits", dict[str, str], "caption=test,vqa=val") == {
        "caption": "test", "vqa": "val"}
    assert parse_text("stages", str | tuple[str | int, ...] | None, "gap,2") == "gap,2"


@pytest.mark.parametrize(("text", "message"), [
    ("2/2", "need integers with 0 <= index < count"), ("1of2", "a shard is written 'i/N'"),
    ("-1/2", "0 <= index < count"), ("a/b", "'i/N'"), ("1/0", "0 <= index < count"),
])
def test_bad_shards_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        Shard.parse(text)


@pytest.mark.parametrize(("values", "message"), [
    ({"models": ("tiny-nativ",)}, "unknown demo model(s) ['tiny-nativ']"),
    ({"models": ("tiny-llava", "tiny-llava")}, "a model is named twice"),
    ({"n": 1}, "n must be an integer >= 2, got 1"),
    ({"masks": True}, "masks must be an int, got True (a bool)"),
])
def test_demo_config(values, message):
    with pytest.raises(ConfigError) as err:
        DemoConfig(**values)
    assert message in str(err.value)


def test_the_attribution_library_config_is_typed_too():
    with pytest.raises(ConfigError, match="leave_one_out must be true or false"):
        AttributionConfig.from_dict({"leave_one_out": "no"})
    with pytest.raises(ConfigError, match=r"k = 16: the model has 16 heads"):
        AttributionConfig(k=16).splits(4, 4)
    assert AttributionConfig(k=3).alpha is None and AttributionConfig().alpha == 0.5
