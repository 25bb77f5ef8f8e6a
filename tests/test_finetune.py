"""Fine-tuning with text→EOI (or text→image) attention masked (hooked_vlm.training.finetune,
`finetune` CLI)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import Tensor
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
    summary_rows,
    text_masked,
    train_masked,
)
from hooked_vlm.training.loop import next_token_loss
from hooked_vlm.training.train import save_checkpoint
from tests.conftest import load_script

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
            with text_masked(vlm, batch, "eoi"):  # the layout of the real batch
                return vlm(inputs)

    masked = logits(perturbed, True) - logits(batch, True)
    free = logits(perturbed, False) - logits(batch, False)
    assert masked[after].abs().max() < 1e-5  # text after the image never sees EOI
    assert free[after].abs().max() > 1e-2  # ... which it does without the mask
    before = torch.arange(batch["input_ids"].shape[1])[None, :] < eoi[:, None]
    assert masked[before].abs().max() == 0  # positions before EOI: untouched either way
    assert masked[torch.arange(2), eoi].abs().max() > 1e-2  # EOI's own row still changes


def test_image_mask_blocks_text_to_image_tokens_but_not_eoi(trained, batch):
    vlm = trained[0].vlm
    layout = vlm.layout(batch["input_ids"], attention_mask=batch["attention_mask"])
    image, eoi = layout.mask("image"), layout.mask("eoi")
    after = (eoi.long().cumsum(1) > 0) & ~eoi & batch["attention_mask"].bool()
    assert image.any() and after.any() and not (image & eoi).any()
    patterns = [f"blocks.{layer}.attn.hook_pattern" for layer in range(vlm.cfg.n_layers)]

    def text_reads(masked: bool) -> tuple[Tensor, Tensor]:
        """Attention of every query after the image to the image tokens and to EOI, summed
        over keys: [layer, batch, head, query]."""
        with torch.no_grad():
            if masked:
                with text_masked(vlm, batch, "image"):
                    _, cache = vlm.run_with_cache(batch, names_filter=patterns)
            else:
                _, cache = vlm.run_with_cache(batch, names_filter=patterns)
        pattern = torch.stack([cache[n] for n in patterns])  # layer batch head query key
        to = {name: (pattern * keys[None, :, None, None, :]).sum(-1)
              for name, keys in (("image", image), ("eoi", eoi))}
        return to["image"].transpose(2, 3)[:, after], to["eoi"].transpose(2, 3)[:, after]

    to_image, to_eoi = text_reads(masked=True)
    free_image, _ = text_reads(masked=False)
    assert to_image.abs().max() == 0  # no head of any layer reads an image token from text
    assert free_image.min() > 1e-4  # ... which every head does without the mask
    assert to_eoi.min() > 0  # EOI stays readable for every query, head and layer

    # and behaviourally: what EOI holds still reaches the text (the EOI test's perturbation)
    rows = torch.arange(2)
    eoi_pos = eoi.int().argmax(1)
    perturbed = dict(batch, input_ids=batch["input_ids"].clone())
    perturbed["input_ids"][rows, eoi_pos] = vlm.tokenizer.convert_tokens_to_ids("red")
    with torch.no_grad(), text_masked(vlm, batch, "image"):
        change = vlm(perturbed) - vlm(batch)
    assert change[after].abs().max() > 1e-2


def test_gradients_flow_through_the_masked_model(trained, batch):
    run = trained[0]
    spec = BatchSpec(run.vlm.processor, run.vlm.model_config)
    rows = list(synthetic_dataset("test", 2))
    full = make_batch(spec, rows, [("classify",), ("vqa",)], np.random.default_rng(0), [0, 1])
    with torch.enable_grad(), text_masked(run.vlm, full):
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


@pytest.mark.parametrize(("options", "match"), [
    ({"steps": 0}, "must be positive"),
    ({"lr": -1.0}, "must be positive"),
    ({"epochs": 3}, "unknown fine-tuning options"),
    ({"turns": ("generate",)}, "no text after the image"),
    ({"turns": ("classify", "count")}, "accepted: .'classify', 'vqa', 'caption'"),
    ({"full": True, "rank": 4}, "LoRA options"),
    ({"masked_keys": "text"}, r"masked_keys='text' refused; accepted: \('eoi', 'image'\)"),
    ({"mask": False, "masked_keys": "image"}, "no effect with mask=False"),
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
    out = runner.invoke(app, ["finetune", "--out", str(tmp_path / "x"), "--mask-keys", "bos"])
    assert out.exit_code == 2 and "masked_keys='bos' refused; accepted: ('eoi', 'image')" in (
        " ".join(out.output.split()))
    out = runner.invoke(app, ["finetune", "--out", str(tmp_path / "x"), "--no-mask",
                              "--mask-keys", "image"])
    assert out.exit_code == 2 and "no effect with mask=False" in " ".join(out.output.split())
    assert not (tmp_path / "x").exists()


def test_planted_gate_script_end_to_end_writes_reports_and_checkpoints(tmp_path):
    """scripts/planted_gate.py: step A (text→image masked), then B (text→EOI) on A's checkpoint;
    each through the whole of finetune (measure, train, merge, save)."""
    script = load_script("planted_gate")
    reports = script.run_steps(tmp_path, log=None, n_eval=4, full=True, **SHORT)
    for step, keys in (("A", "image"), ("B", "eoi")):
        saved = json.loads((tmp_path / step / "finetune.json").read_text())
        assert saved["config"]["full"] and saved["steps"] == 3 and reports[step]["lr"] == 3e-4
        assert saved["masked"] == saved["config"]["masked_keys"] == keys
        for when in ("before", "after"):
            probe = saved[when]["probe"]
            assert set(probe["mean"]["accuracy"]) == {"none", "eoi", "image"}
            # clean first-token answers score as evaluate's greedy ones (single-word answers)
            for task in ("classify", "vqa_color", "vqa_shape", "vqa_count"):
                assert probe[task]["accuracy"]["none"] == saved[when]["eval"][task]
        assert saved["merge_max_abs_logit_diff"] < 1e-4
    assert reports["B"]["model"] == str(tmp_path / "A")
    # B starts from A's saved checkpoint: it measures what A measured after training
    a_after, b_before = reports["A"]["after"], reports["B"]["before"]
    assert summary_rows(a_after) == pytest.approx(summary_rows(b_before), abs=1e-4)
    assert HookedVLM.from_pretrained(tmp_path / "B", model_config="tiny-native").cfg.native
    table = script.markdown_table(reports).splitlines()
    assert len(table) == 2 + len(summary_rows(a_after)) and "(n = 4)" in table[0]
    floor = script.floor_probe(tmp_path, 4)  # text→image tokens and EOI both cut
    assert set(floor) == {"before", "A", "B"}
    assert all(np.isfinite(v) for rows in floor.values() for v in rows.values())
    assert len(script.markdown_table(reports, floor).splitlines()) == len(table) + 2
