"""Fine-tuning with text→EOI attention masked (hooked_vlm.training.finetune, `finetune` CLI)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hooked_vlm import HookedVLM
from hooked_vlm.cli import app
from hooked_vlm.data.synthetic import synthetic_dataset
from hooked_vlm.training.batches import BatchSpec, make_batch
from hooked_vlm.training.finetune import (
    FinetuneError,
    finetune,
    finetune_config,
    load_trainable,
    merged_model,
    text_eoi_masked,
    train_masked,
)
from hooked_vlm.training.loop import next_token_loss
from hooked_vlm.training.train import save_checkpoint

SHORT = {"steps": 3, "batch_size": 2, "n_train": 8, "warmup": 1}


def short_run(seed: int = 0, **options):
    cfg = finetune_config(**{**SHORT, **options})
    run = load_trainable("tiny-native", None, cfg, seed)
    losses = train_masked(run, cfg, seed)
    return run, losses


@pytest.fixture(scope="module")
def trained():
    return short_run(seed=0)


@pytest.fixture(scope="module")
def batch(trained):
    run, _ = trained
    spec = BatchSpec(run.vlm.processor, run.vlm.model_config)
    rows = list(synthetic_dataset("test", 2))
    out = make_batch(spec, rows, [("classify", "vqa"), ("vqa", "caption")],
                     np.random.default_rng(0), [0, 1])
    return {k: v for k, v in out.items() if k != "labels"}


def test_short_run_is_reproducible_with_a_seed(trained):
    run, losses = trained
    again, losses_again = short_run(seed=0)
    other, _ = short_run(seed=1)
    assert losses == losses_again and all(np.isfinite(losses))
    a, b, c = run.merged_weights(), again.merged_weights(), other.merged_weights()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)  # the seed matters
    # only the LoRA factors train; the base weights stay as loaded
    assert run.lora and all(".lora_" in n for n, p in run.weights.items() if p.requires_grad)


def test_training_mask_blocks_text_to_eoi_and_nothing_else(trained, batch):
    vlm = trained[0].vlm
    layout = vlm.layout(batch["input_ids"], attention_mask=batch["attention_mask"])
    eoi = torch.stack([p[0] for p in layout.select("eoi")])
    after = torch.zeros_like(layout.mask("text"))
    for b, p in enumerate(eoi.tolist()):
        after[b, p + 1:] = batch["attention_mask"][b, p + 1:].bool()
    perturbed = dict(batch, input_ids=batch["input_ids"].clone())
    perturbed["input_ids"][torch.arange(2), eoi] = vlm.tokenizer.convert_tokens_to_ids("red")

    def logits(inputs, masked):
        with torch.no_grad():
            if not masked:
                return vlm(inputs)
            with text_eoi_masked(vlm, batch):  # the layout of the real batch
                return vlm(inputs)

    masked = logits(perturbed, True) - logits(batch, True)
    free = logits(perturbed, False) - logits(batch, False)
    assert masked[after].abs().max() < 1e-5  # text after the image never sees EOI
    assert free[after].abs().max() > 1e-2  # ... which it does without the mask
    before = torch.arange(batch["input_ids"].shape[1])[None, :] < eoi[:, None]
    assert masked[before].abs().max() == 0  # positions before EOI: untouched either way
    assert masked[torch.arange(2), eoi].abs().max() > 1e-2  # EOI's own row still changes


def test_gradients_flow_through_the_masked_model(trained, batch):
    run = trained[0]
    spec = BatchSpec(run.vlm.processor, run.vlm.model_config)
    rows = list(synthetic_dataset("test", 2))
    full = make_batch(spec, rows, [("classify",), ("vqa",)], np.random.default_rng(0), [0, 1])
    with torch.enable_grad(), text_eoi_masked(run.vlm, full):
        loss = next_token_loss(run.vlm.hf_model, full)
        grads = torch.autograd.grad(loss, run.params)
    assert all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_merged_checkpoint_loads_and_matches_the_lora_model(trained, batch, tmp_path):
    run = trained[0]
    save_checkpoint(merged_model(run), run.vlm.processor, tmp_path / "ft", {"finetune.json": {}})
    loaded = HookedVLM.from_pretrained(tmp_path / "ft", model_config="tiny-native")
    base = HookedVLM.from_pretrained("tiny-native")
    with torch.no_grad():
        ours, theirs, original = run.vlm(batch), loaded(batch), base(batch)
    real = batch["attention_mask"].bool()
    assert (ours - theirs)[real].abs().max() < 1e-4
    assert (ours - original)[real].abs().max() > 1e-3  # the LoRA did change the model


def test_finetune_end_to_end_writes_report_and_checkpoint(tmp_path):
    report = finetune("tiny-native", tmp_path / "ft", log=None, n_eval=4, **SHORT, full=True)
    saved = json.loads((tmp_path / "ft" / "finetune.json").read_text())
    assert saved["config"]["full"] and saved["steps"] == 3 and report["lr"] == 3e-4
    for when in ("before", "after"):
        probe = saved[when]["probe"]
        assert set(probe["mean"]["accuracy"]) == {"none", "eoi", "image"}
        # clean first-token answers score as evaluate's greedy ones (single-word answers)
        for task in ("classify", "vqa_color", "vqa_shape", "vqa_count"):
            assert probe[task]["accuracy"]["none"] == saved[when]["eval"][task]
    assert saved["merge_max_abs_logit_diff"] < 1e-4
    assert HookedVLM.from_pretrained(tmp_path / "ft", model_config="tiny-native").cfg.native


@pytest.mark.parametrize(("options", "match"), [
    ({"steps": 0}, "must be positive"),
    ({"lr": -1.0}, "must be positive"),
    ({"epochs": 3}, "unknown fine-tuning options"),
    ({"turns": ("generate",)}, "no text after the image"),
    ({"turns": ("classify", "count")}, "accepted: .'classify', 'vqa', 'caption'"),
    ({"full": True, "rank": 4}, "LoRA options"),
])
def test_bad_options_raise_clearly(options, match):
    with pytest.raises(FinetuneError, match=match):
        finetune_config(**options)


def test_model_without_eoi_is_refused(tmp_path):
    with pytest.raises(FinetuneError, match="no end-of-image .EOI. token.*tiny-native"):
        finetune("tiny-llava", tmp_path / "x", log=None, **SHORT)
    assert not (tmp_path / "x").exists()


def test_cli_errors_are_clear(tmp_path):
    runner = CliRunner()
    out = runner.invoke(app, ["finetune", "--out", str(tmp_path / "x"), "--full", "--rank", "4"])
    assert out.exit_code == 2 and "['rank'] are LoRA options" in out.output
    out = runner.invoke(app, ["finetune", "--out", str(tmp_path / "x"), "--model", "tiny-llava"])
    assert out.exit_code == 2 and "no end-of-image (EOI) token" in out.output
    out = runner.invoke(app, ["finetune", "--out", str(tmp_path / "x"), "--steps", "0"])
    assert out.exit_code == 2 and "must be positive" in out.output
