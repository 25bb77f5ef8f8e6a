"""Attribution on a real tiny HookedVLM whose weights route image information through known
heads; exactness (all kept = clean, seeds, batching, resume); token level; errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from hooked_vlm import HookedVLM
from hooked_vlm.attribution import (
    AttributionConfig,
    ConfigError,
    Evaluator,
    Example,
    StoreError,
    Target,
    fit_store,
    image_attention,
    image_token_scores,
    leave_one_out,
    open_store,
    query_position_scores,
    run,
    stored_splits,
    units,
)
from hooked_vlm.interventions import evaluate_head_masks, head_ablation, repeat_layout
from hooked_vlm.testing.tiny import build_tiny

L, H = 4, 4
LIVE = [(1, 2), (2, 0), (3, 3)]
DECOY = (0, 1)


def _routed_llava() -> tuple[HookedVLM, list[Example]]:
    """Tiny LLaVA (4 layers x 4 heads) in which only the LIVE heads write anything (every
    other head's output projection is zero), and DECOY, a dead head, attends to the image
    tokens almost exclusively (its query and key read the text and image directions)."""
    tiny = build_tiny("llava", n_layers=L)
    hf = tiny.model
    model = HookedVLM.from_hf(hf)
    d = hf.config.text_config.hidden_size // H
    group = H // hf.config.text_config.num_key_value_heads
    gen = torch.Generator().manual_seed(5)
    ids = tiny.inputs["input_ids"][:1]
    inputs = [{"input_ids": ids, "attention_mask": torch.ones_like(ids),
               "pixel_values": torch.randn(1, 3, 30, 30, generator=gen)} for _ in range(4)]
    image = model.layout(**inputs[0]).mask("image")[0]
    _, cache = model.run_with_cache(inputs[0], names_filter="blocks.0.ln1.hook_out")
    x = cache["blocks.0.ln1.hook_out"][0]
    to_image = x[image].mean(0) - x[~image].mean(0)
    text = x[~image].mean(0)
    layers = hf.model.language_model.layers
    with torch.no_grad():
        attn = layers[DECOY[0]].self_attn
        for row in (d // 2 - 1, d - 1):  # the slowest rotary pair: position barely matters
            attn.k_proj.weight[DECOY[1] // group * d + row] = 8 * to_image / to_image.norm()
            attn.q_proj.weight[DECOY[1] * d + row] = 8 * text / text.norm()
        for layer, block in enumerate(layers):
            for head in range(H):
                block.self_attn.o_proj.weight[:, head * d : (head + 1) * d] *= (
                    10.0 if (layer, head) in LIVE else 0.0
                )
    examples = [Example(i, answer=int(model(i)[0, -1].argmax()), label=n % 2)
                for n, i in enumerate(inputs)]
    return model, examples


@pytest.fixture(scope="module")
def routed():
    return _routed_llava()


def _store_fit(model, examples, tmp_path, **config):
    evaluator = Evaluator(model, examples, AttributionConfig(**config))
    store = open_store(tmp_path, evaluator)
    run(evaluator, store)
    return evaluator, store, fit_store(store)


DEAD = [(layer, head) for layer in range(L) for head in range(H) if (layer, head) not in LIVE]


@pytest.mark.parametrize("mode", ["baseline_kv", "knockout"])
def test_live_heads_rank_above_dead_ones_and_the_decoy_fools_only_attention(routed, tmp_path,
                                                                             mode):
    model, examples = routed
    evaluator, store, (attribution, quality) = _store_fit(
        model, examples, tmp_path, n_masks=256, n_heldout=64, alpha=0.5, mode=mode,
        chunk_size=128, batch_size=32,
    )
    z = np.abs(attribution.pooled_coef) / _standard_errors(store, attribution)
    live, dead = min(z[h] for h in LIVE), max(z[h] for h in DEAD)
    print(f"{mode}: |beta| / standard error: live >= {live:.1f}, dead <= {dead:.1f}; "
          f"held-out {quality.summary()}")
    assert dead < 4 < 10 < live  # dead heads: zero within sampling error; live: far from it
    for coef in np.abs(attribution.coef):
        assert min(coef[h] for h in LIVE) > max(coef[h] for h in DEAD)
    attention = image_attention(model, [ex.inputs for ex in examples]).mean(0)
    assert np.unravel_index(attention.argmax(), attention.shape) == DECOY
    assert attention[DECOY] > 0.95 > attention.max(where=np.arange(L * H).reshape(L, H) != 1,
                                                   initial=0)
    assert z[DECOY] < 4
    loo = leave_one_out(evaluator.evaluate, range(len(examples)), L, H)
    np.testing.assert_allclose([loo[:, layer, head] for layer, head in DEAD], 0, atol=1e-5)


def _standard_errors(store, attribution) -> np.ndarray:
    """OLS standard errors of the pooled coefficients, sigma^2 (X'X)^-1 with an intercept."""
    masks = stored_splits(store)["train"]
    x = masks.masks(0, masks.size).reshape(masks.size, -1).astype(float)
    x = np.c_[np.ones(len(x)), x]
    y = store.targets("train").mean(0)
    resid = y - x @ np.r_[attribution.pooled_intercept, attribution.pooled_coef.ravel()]
    sigma2 = resid @ resid / (len(x) - x.shape[1])
    return np.sqrt(sigma2 * np.diag(np.linalg.inv(x.T @ x)))[1:].reshape(L, H)


@pytest.mark.parametrize(("mode", "baseline"), [
    ("baseline_kv", "mean"), ("baseline_kv", "blank"), ("baseline_kv", "zeros"),
    ("knockout", "mean"), ("zero", "mean"), ("mean", "mean"),
])
def test_all_kept_is_the_clean_run_and_batching_changes_nothing(routed, mode, baseline):
    model, examples = routed
    masks = np.random.default_rng(0).random((12, L, H)) >= 0.5
    masks[0] = True
    masks[1] = False
    one_by_one = Evaluator(model, examples, AttributionConfig(
        mode=mode, baseline=baseline, batch_size=1, reuse_prefix=False))
    batched = Evaluator(model, examples, AttributionConfig(
        mode=mode, baseline=baseline, batch_size=5))
    for i in (0, 3):
        answer = examples[i].answer
        clean = model(examples[i].inputs, logits_to_keep=1)[0, -1, answer]
        slow, fast = one_by_one.evaluate(i, masks), batched.evaluate(i, masks)
        assert slow[0] == clean.item()  # no hooks at all: the very same forward
        assert abs(slow[0] - model(examples[i].inputs)[0, -1, answer].item()) < 1e-5
        np.testing.assert_allclose(fast, slow, atol=1e-5, rtol=0)
        assert abs(slow[1] - slow[0]) > 1e-4  # ablating everything does something


def test_same_seed_same_attribution_and_a_resumed_run_equals_an_uninterrupted_one(routed,
                                                                                  tmp_path):
    model, examples = routed
    config = dict(n_masks=48, n_heldout=16, chunk_size=16, batch_size=16, seed=4)
    _, whole, (first, _) = _store_fit(model, examples, tmp_path / "a", **config)
    _, _, (again, _) = _store_fit(model, examples, tmp_path / "b", **config)
    np.testing.assert_array_equal(first.coef, again.coef)
    _, _, (other, _) = _store_fit(model, examples, tmp_path / "c", **{**config, "seed": 5})
    assert not np.allclose(other.coef, first.coef)
    evaluator = Evaluator(model, examples, AttributionConfig(**config))
    interrupted = open_store(tmp_path / "d", evaluator)
    work = units(evaluator)
    run(evaluator, interrupted, work[: len(work) // 3])
    fresh = Evaluator(model, examples, AttributionConfig(**config))  # a new process, say
    assert run(fresh, open_store(tmp_path / "d", fresh)) == len(work) - len(work) // 3
    for split in ("train", "heldout", "reference"):
        np.testing.assert_array_equal(interrupted.targets(split), whole.targets(split))
    reference = whole.targets("reference")
    clean = [model(ex.inputs)[0, -1, ex.answer].item() for ex in examples]
    np.testing.assert_allclose(reference[:, 0], clean, atol=1e-5, rtol=0)


def test_token_level_scores(routed):
    model, examples = routed
    evaluator = Evaluator(model, examples, AttributionConfig(mode="knockout", batch_size=16))
    live = np.zeros((L, H), dtype=bool)
    live[tuple(zip(*LIVE, strict=True))] = True
    layout = evaluator.layout(0)
    text = query_position_scores(evaluator, 0, live)
    after_image = layout.mask("text")[0] & (torch.arange(layout.seq_len) > 28)
    assert text.positions.tolist() == after_image.nonzero().flatten().tolist()
    assert text.tokens is None and np.isfinite(text.scores).all() and text.reference != 0
    p = int(text.positions[-1])  # the same number through the low-level API
    one = torch.zeros(1, layout.seq_len, dtype=torch.bool)
    one[0, p] = True
    direct = evaluate_head_masks(
        model, examples[0].inputs, torch.tensor(~live[None], dtype=torch.float32),
        lambda lg: lg[:, examples[0].answer], "knockout", queries=one, reuse_prefix=False,
    )
    clean = model(examples[0].inputs)[0, -1, examples[0].answer]
    np.testing.assert_allclose(text.scores[-1], (clean - direct[0]).item(), atol=1e-5)
    dead = ~live & ~np.eye(L, H, dtype=bool)  # no live head in it
    np.testing.assert_allclose(query_position_scores(evaluator, 0, dead).scores, 0, atol=1e-5)
    image = image_token_scores(evaluator, 0, live, n_subsets=96, n_heldout=32)
    assert image.positions.tolist() == layout.mask("image")[0].nonzero().flatten().tolist()
    assert image.scores.shape == (25,) and image.quality.n_heldout == 32
    assert np.isfinite(image.quality.pearson).all()
    silent = image_token_scores(evaluator, 0, dead, n_subsets=48, n_heldout=0)
    np.testing.assert_allclose(silent.scores, 0, atol=1e-5)


def test_per_mask_selectors_match_one_mask_at_a_time(routed):
    model, examples = routed
    inputs = examples[0].inputs
    layout = model.layout(**inputs)
    masks = torch.zeros(3, L, H)
    keys = torch.zeros(3, layout.seq_len, dtype=torch.bool)
    for row, span in enumerate([(4, 10), (10, 20), (20, 29)]):
        keys[row, span[0] : span[1]] = True
    got = evaluate_head_masks(model, inputs, masks, lambda lg: lg[:, 7], "knockout", keys=keys)
    for row in range(3):
        hooks = head_ablation(model, repeat_layout(layout, 1), masks[row : row + 1], "knockout",
                              queries="text_after_image", keys=keys[row : row + 1])
        want = model.run_with_hooks(inputs, fwd_hooks=hooks)[0, -1, 7]
        torch.testing.assert_close(got[row], want, atol=1e-5, rtol=0)


def test_clear_errors(routed, tmp_path):
    model, examples = routed
    first = Evaluator(model, examples[:2], AttributionConfig(n_masks=8))
    run(first, open_store(tmp_path, first), units(first)[:1])  # a finished unit: the store's
    with pytest.raises(StoreError, match="examples: stored 'blake2b:"):
        open_store(tmp_path, Evaluator(model, examples[2:], AttributionConfig(n_masks=8)))
    with pytest.raises(ConfigError, match="mode must be one of baseline_kv, zero"):
        AttributionConfig(mode="shuffle")
    with pytest.raises(ConfigError, match="queries must be a string"):
        AttributionConfig(queries=[3, 4])
    custom = Target.custom("top", lambda logits, ex: logits.max(-1).values)
    with pytest.raises(ConfigError, match="target='top'"):
        Evaluator(model, examples, AttributionConfig(), target=custom)
    evaluator = Evaluator(model, examples, AttributionConfig(mode="zero"))
    with pytest.raises(ValueError, match="ablates head outputs"):
        image_token_scores(evaluator, 0, np.ones((L, H), dtype=bool))
    shifted = dict(examples[0].inputs)
    shifted["input_ids"] = torch.cat([shifted["input_ids"][:, :1], shifted["input_ids"]], 1)
    shifted["attention_mask"] = torch.ones_like(shifted["input_ids"])
    moved = [examples[0], Example(shifted, answer=1)]
    with pytest.raises(ConfigError, match="same places"):
        Evaluator(model, moved, AttributionConfig()).evaluate(0, np.ones((1, L, H), bool))


def test_readme_attribution_example_runs(tmp_path, monkeypatch):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Head attribution", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README-attribution", "exec"), {})
    assert (tmp_path / "runs" / "tiny-heads" / "train.npy").exists()
