"""Bad input, tried as a new user would: each case raises a clear error (or now behaves
correctly), and a clean forward afterwards equals one before (no hook, cache or flag leaks)."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hooked_vlm import (
    HookedVLM,
    HookOutputError,
    ImageInputError,
    ImageTokenMismatchError,
    InputError,
    LayoutError,
)
from hooked_vlm.cli import app
from hooked_vlm.interventions import (
    InterventionError,
    PrefixCache,
    head_ablation,
    knockout,
    patch,
    patch_sweep,
    steer,
)
from hooked_vlm.loading import ModelSourceError
from hooked_vlm.storage import UnitStore
from hooked_vlm.testing.tiny import build_tiny
from tests.conftest import ALL_ARCHS, Wrapped, wrap


@pytest.fixture(autouse=True)
def no_grad():
    """Inference only, for this module's tests (a module-level switch would leak into every
    later test module)."""
    with torch.no_grad():
        yield


@pytest.fixture(scope="module")
def llava() -> Wrapped:
    return wrap("llava")


@pytest.fixture(scope="module")
def clean(llava: Wrapped) -> torch.Tensor:
    return llava.model(llava.inputs)


@pytest.fixture(autouse=True)
def stays_clean(request):
    """After every case that used the llava model, a clean forward equals the one before."""
    yield
    if "llava" in request.fixturenames:
        w, before = request.getfixturevalue("llava"), request.getfixturevalue("clean")
        assert sum(len(h._forward_hooks) for h in w.model.bridge.hook_dict.values()) == 0
        assert torch.equal(w.model(w.inputs), before)


# --------------------------------------------------------------------------- inputs
@pytest.mark.parametrize(
    ("key", "hint"),
    [("pixel_value", "pixel_values"), ("attention_maks", "attention_mask"),
     ("image_size", "image_sizes")],
)
def test_misspelt_input_is_refused_with_a_suggestion(llava, key, hint):
    kw = {k: v for k, v in llava.inputs.items() if k != hint}
    value = llava.inputs.get(hint, torch.tensor([[30, 30], [30, 30]]))
    with pytest.raises(InputError, match=f"unknown input '{key}'.*Did you mean '{hint}'"):
        llava.model(kw, **{key: value})


@pytest.mark.parametrize("key", ["inputs_embeds", "use_cache", "return_dict"])
def test_inputs_hooked_vlm_manages_are_refused(llava, key):
    with pytest.raises(InputError, match=f"input '{key}' is not accepted"):
        llava.model(llava.inputs, **{key: True})


def test_two_different_caches_are_refused(llava):
    _, a = llava.model.run_with_kv_cache(llava.inputs)
    _, b = llava.model.run_with_kv_cache(llava.inputs)
    ids = torch.tensor([[9], [9]])
    mask = torch.ones(2, llava.inputs["input_ids"].shape[1] + 1, dtype=torch.long)
    with pytest.raises(ValueError, match="two different KV caches"):
        llava.model(input_ids=ids, attention_mask=mask, cache=a, past_key_values=b)


@pytest.mark.parametrize("name", ALL_ARCHS)
def test_placeholders_without_pixels_are_refused_on_every_family(name):
    w = wrap(name)
    text_only = {"input_ids": w.inputs["input_ids"], "attention_mask": w.inputs["attention_mask"]}
    with pytest.raises(ImageInputError, match="no pixel_values were given"):
        w.model(text_only)


@pytest.mark.parametrize("name", ["llava", "chameleon", "janus", "qwen2_vl"])
def test_per_example_counts_that_only_agree_in_total_are_refused(name):
    """Example 0 one placeholder short, example 1 one too many: HF's total check passes."""
    w = wrap(name)
    ids = w.inputs["input_ids"].clone()
    image_id = w.model.architecture.tokens(w.model.hf_model.config).image
    first0 = int((ids[0] == image_id).nonzero()[0, 0])
    last1 = int((ids[1] == image_id).nonzero()[-1, 0])
    ids[0, first0] = ids[0, 0 if name != "chameleon" else -1]  # a text id
    ids[1, last1 + 1] = image_id  # the token after the image (EOI or text) now a placeholder
    if name == "qwen2_vl":  # keep the forward's derived inputs consistent with the ids
        w.inputs.pop("mm_token_type_ids", None)
    with pytest.raises(ImageTokenMismatchError, match="image placeholder tokens"):
        w.model({**w.inputs, "input_ids": ids})


# --------------------------------------------------------------------------- generation
def test_sampling_options_without_do_sample_are_refused(llava):
    with pytest.raises(InputError, match="temperature given with do_sample=False"):
        llava.model.generate(llava.inputs, max_new_tokens=2, temperature=0.7)


@pytest.mark.parametrize("option", [{"num_beams": 4}, {"repetition_penalty": 1.2}])
def test_unimplemented_generation_options_are_refused(llava, option):
    with pytest.raises(InputError, match="not implemented by HookedVLM.generate"):
        llava.model.generate(llava.inputs, max_new_tokens=2, **option)


@pytest.mark.parametrize("bad", [{"top_p": 1.5}, {"top_k": 0}, {"temperature": 0.0}])
def test_out_of_range_sampling_options_are_refused(llava, bad):
    with pytest.raises(InputError, match="must be"):
        llava.model.generate(llava.inputs, max_new_tokens=2, do_sample=True, **bad)


def test_seeded_sampling_is_reproducible_and_follows_the_seed(llava):
    def sample(seed: int) -> torch.Tensor:
        return llava.model.generate(llava.inputs, max_new_tokens=8, eos_token_id=[],
                                    do_sample=True, temperature=2.0, seed=seed)

    assert torch.equal(sample(0), sample(0))
    assert any(not torch.equal(sample(0), sample(s)) for s in (1, 2, 3))


def test_finished_rows_are_padded_like_hf(llava):
    """EOS = row 0's first greedy token: row 0 finishes at once and is padded with pad_token_id."""
    first = llava.model.generate(llava.inputs, max_new_tokens=1, eos_token_id=[])[:, -1]
    eos = int(first[0])
    reference = copy.deepcopy(llava.reference)
    reference.generation_config.eos_token_id = None
    with torch.no_grad():
        expected = reference.generate(**llava.inputs, max_new_tokens=4, do_sample=False,
                                      eos_token_id=eos, pad_token_id=0)
    got = llava.model.generate(llava.inputs, max_new_tokens=4, eos_token_id=eos)
    assert torch.equal(got, expected)
    assert int(got[0, -1]) == 0 != eos  # padded with the pad id, not EOS


# --------------------------------------------------------------------------- hooks
@pytest.mark.parametrize(
    ("returned", "what"),
    [(lambda x: x[:, :-1], "shape"), (lambda x: x.long(), "torch.int64"), (lambda x: 1.0, "float")],
)
def test_wrong_hook_return_names_the_hook_and_the_expected_tensor(llava, returned, what):
    def bad_hook(resid, hook):
        return returned(resid)

    with pytest.raises(HookOutputError, match=r"'bad_hook' on blocks\.1\.hook_resid_post") as err:
        llava.model.run_with_hooks(llava.inputs, fwd_hooks=[("blocks.1.hook_resid_post", bad_hook)])
    assert what in str(err.value) and "torch.float32 tensor of shape (2, 34, 32)" in str(err.value)


# --------------------------------------------------------------------------- interventions
def test_nan_steering_vector_is_refused(llava):
    layout = llava.model.layout(**llava.inputs)
    vector = torch.zeros(llava.model.cfg.d_model)
    vector[3] = float("nan")
    with pytest.raises(ValueError, match="steering vector.*NaN/inf"):
        steer(llava.model, layout, vector, positions="last_image", layers=[0])


def test_inf_patch_source_is_refused(llava):
    layout = llava.model.layout(**llava.inputs)
    name = "blocks.1.hook_resid_pre"
    _, cache = llava.model.run_with_cache(llava.inputs, names_filter=name)
    source = {name: cache[name].clone()}
    source[name][0, 4, 0] = float("inf")
    with pytest.raises(ValueError, match="patch source blocks.1.hook_resid_pre"):
        patch(llava.model, layout, source, name, positions="last_image")


def test_nan_head_mask_is_refused(llava):
    layout = llava.model.layout(**llava.inputs)
    masks = torch.ones(2, llava.model.cfg.n_layers, llava.model.cfg.n_heads)
    masks[1, 0, 2] = float("nan")
    with pytest.raises(InterventionError, match="keep-weights in \\[0, 1\\]"):
        head_ablation(llava.model, layout, masks, mode="zero")


@pytest.mark.parametrize("layers", [[0.7], "0", [True], 1.0])
def test_non_integer_layers_are_refused(llava, layers):
    layout = llava.model.layout(**llava.inputs)
    with pytest.raises(InterventionError, match="must be an int or a list of ints"):
        knockout(llava.model, layout, "text", "image", layers=layers)


def test_non_integer_heads_are_refused(llava):
    layout = llava.model.layout(**llava.inputs)
    with pytest.raises(InterventionError, match="heads must be an int"):
        knockout(llava.model, layout, "text", "image", heads=[1.5])


def test_patch_sweep_template_without_layer_is_refused(llava):
    with pytest.raises(InterventionError, match="needs a hook template with '\\{layer\\}'"):
        patch_sweep(llava.model, llava.inputs, llava.inputs, "blocks.0.hook_resid_pre",
                    "last_image")


def test_prefix_cache_stays_usable_after_a_run_that_fails_partway(llava):
    layout = llava.model.layout(**llava.inputs)
    hooks = knockout(llava.model, layout, "text", "image")
    prefix = PrefixCache.build(llava.model, llava.inputs, hooks.start)
    expected = prefix.run(hooks)

    def explode(resid, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):  # layer 0 extended its cache, layer 1 not
        prefix.run([*hooks, ("blocks.1.hook_resid_pre", explode)])
    assert [layer.get_seq_length() for layer in prefix.past.layers] == [prefix.start] * 2
    assert torch.equal(prefix.run(hooks), expected)


# --------------------------------------------------------------------------- vision edits
@pytest.mark.parametrize(("name", "layer"), [("llava", 0), ("llava_next", 0),
                                             ("llava_onevision", 1)])
def test_edit_of_the_vision_layer_the_projector_reads_reaches_the_logits(name, layer):
    """LLaVA reads hidden_states[vision_feature_layer], recorded before TL's hook_resid_post:
    that edit used to be dropped silently."""
    w = wrap(name)
    noise = torch.randn(w.model.hf_model.config.vision_config.hidden_size,
                        generator=torch.Generator().manual_seed(0))
    hook = (f"vision_encoder.encoder_layers.{layer}.hook_resid_post", lambda x, hook: x + noise)
    edited = w.model.run_with_hooks(w.inputs, fwd_hooks=[hook])
    assert (edited - w.model(w.inputs)).abs().max() > 1e-3


# --------------------------------------------------------------------------- loading
def test_missing_local_path_is_not_sent_to_the_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSourceError, match="no such directory: './nope'"):
        HookedVLM.from_pretrained("./nope")


def test_model_config_typo_suggests_the_name(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSourceError, match="Did you mean 'chameleon-7b'"):
        HookedVLM.from_pretrained("chameleon-7")


def test_path_to_config_json_asks_for_the_directory(tmp_path):
    build_tiny("llava").model.save_pretrained(tmp_path)
    with pytest.raises(ModelSourceError, match="is a file; give the directory"):
        HookedVLM.from_pretrained(tmp_path / "config.json")


def test_unknown_eoi_id_says_how_to_name_it():
    tiny = build_tiny("janus")
    boi, eoi = tiny.model.config.boi_token_id, tiny.model.config.eoi_token_id
    bare = copy.deepcopy(tiny.model)
    del bare.config.boi_token_id, bare.config.eoi_token_id  # as a bare HF Janus config
    model = HookedVLM.from_hf(bare)
    with pytest.raises(LayoutError, match=r"unknown.*special_tokens=\{'eoi': ID\}"):
        model.layout(**tiny.inputs).select("eoi")
    named = HookedVLM.from_hf(copy.deepcopy(bare), special_tokens={"boi": boi, "eoi": eoi})
    expected = HookedVLM.from_hf(tiny.model).layout(**tiny.inputs).select("eoi")
    assert [p.tolist() for p in named.layout(**tiny.inputs).select("eoi")] == [
        p.tolist() for p in expected
    ]
    with pytest.raises(ValueError, match="unknown special-token role 'end'"):
        HookedVLM.from_hf(copy.deepcopy(bare), special_tokens={"end": eoi})


def test_from_hf_copy_leaves_the_callers_model_usable():
    tiny = build_tiny("llava")
    before = tiny.model(**tiny.inputs, output_attentions=True)
    wrapped = HookedVLM.from_hf(tiny.model, copy=True)
    after = tiny.model(**tiny.inputs, output_attentions=True)
    assert type(tiny.model.model.language_model.layers[0]).__module__.startswith("transformers")
    assert after.attentions is not None and torch.equal(after.logits, before.logits)
    assert torch.allclose(wrapped(tiny.inputs), before.logits, atol=1e-5)


# --------------------------------------------------------------------------- CLI and results
def test_demo_model_typo_fails_before_writing_anything(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--models", "chamelon"])
    assert result.exit_code != 0 and "chamelon" in result.output
    assert not out.exists()


def test_concurrent_saves_of_one_unit_never_collide(tmp_path):
    """A unit computed twice (a retried Ray task) is the same bytes: writers never collide."""
    store = UnitStore(tmp_path)
    errors: list[BaseException] = []

    def save_many(worker: int) -> None:
        try:
            for _ in range(40):
                store.save("shared/0000", {"x": np.arange(1000)}, float(worker))
        except BaseException as err:  # noqa: BLE001 - the test reports any failure
            errors.append(err)

    threads = [threading.Thread(target=save_many, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.done("shared/0000") and store.load("shared/0000")["x"].sum() == 499500
    assert not list(tmp_path.rglob("*.tmp"))
