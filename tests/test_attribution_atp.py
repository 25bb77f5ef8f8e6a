"""Attribution patching (AtP, AtP*) on tiny LLaVAs: a planted model in which only known heads
can read the image (permanent hooks), the derivative of the real ablation, saturation, token
level, the cost in forwards and backwards, errors."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hooked_vlm.attribution import (
    Evaluator,
    atp_example,
    attribution_patching,
    blank_image,
    fit_store,
    image_attention,
    leave_one_out,
    open_store,
    query_position_scores,
    ranking,
    run,
)
from hooked_vlm.interventions import InterventionError, evaluate_head_masks, kv_baseline
from hooked_vlm.interventions.ablation import KVBaseline
from hooked_vlm.model import HookedVLM
from hooked_vlm.testing.attribution_fixtures import TINY_CONFIG, tiny_evaluator

L, H = 2, 4  # tiny_evaluator's LLaVA
READERS = [(0, 2), (1, 1)]  # the only heads whose text queries can read the image
SATURATED = (1, 1)  # a reader whose text rows put > 99% of their weight on the image
KEY_MODES = ("baseline_kv", "knockout")


def _edges(layout, n_q: int, n_k: int) -> torch.Tensor:
    """Text -> image edges ``[n_q, n_k]`` of the last ``n_q`` queries (a suffix run has fewer)."""
    text, image = layout.mask("text")[0], layout.mask("image")[0]
    return text[n_k - n_q : n_k, None] & image[None, :n_k]


@pytest.fixture(scope="module")
def planted():
    """tiny_evaluator's model and examples, with permanent hooks: every head but READERS has its
    text -> image edges masked (-inf), and SATURATED's text -> image scores are raised by 6."""
    evaluator = tiny_evaluator(n_examples=3)
    model, layout = evaluator.model, evaluator.layout(0)
    points = []

    def blind(layer: int):
        heads = torch.tensor([(layer, h) not in READERS for h in range(H)])

        def hook(mask, hook):
            edges = _edges(layout, *mask.shape[-2:])
            return mask.expand(-1, H, -1, -1).masked_fill(
                heads[:, None, None] & edges, float("-inf"))

        return hook

    def boost(scores, hook):
        return scores + 6.0 * (_edges(layout, *scores.shape[-2:])
                               & (torch.arange(H) == SATURATED[1])[:, None, None])

    for layer in range(L):
        points.append(model.bridge.hook_dict[f"blocks.{layer}.attn.hook_attn_mask"])
        points[-1].add_perma_hook(blind(layer))
    points.append(model.bridge.hook_dict[f"blocks.{SATURATED[0]}.attn.hook_attn_scores"])
    points[-1].add_perma_hook(boost)
    yield model, evaluator.examples
    for point in points:
        point.remove_hooks(including_permanent=True)


def _evaluator(planted, mode: str, **config) -> Evaluator:
    model, examples = planted
    return Evaluator(model, examples, replace(TINY_CONFIG, mode=mode, **config))


def _top(scores: np.ndarray, k: int) -> set[tuple[int, int]]:
    return {divmod(int(i), H) for i in ranking(np.abs(scores))[:k]}


def test_atp_ranks_the_planted_readers_first_as_the_regression_does(planted, tmp_path):
    readers = np.zeros((L, H), dtype=bool)
    readers[tuple(zip(*READERS, strict=True))] = True
    for mode in KEY_MODES:
        evaluator = _evaluator(planted, mode, n_masks=48, n_heldout=0, chunk_size=48)
        store = open_store(tmp_path / mode, evaluator)
        run(evaluator, store)
        attribution, _ = fit_store(store)
        assert _top(attribution.pooled_coef, 2) == set(READERS), mode
        atp = attribution_patching(_evaluator(planted, mode))
        for estimate in ("linear", "corrected"):
            scores = atp.scores(estimate)
            assert _top(atp.pooled(estimate), 2) == set(READERS), (mode, estimate)
            for per_example in scores:
                assert _top(per_example, 2) == set(READERS)
            assert (scores[:, ~readers] == 0).all()  # a head that cannot read the image
            assert (np.abs(scores[:, readers]) > 1e-6).all()
        assert (atp.n_recomputed == L * H).all()


def test_saturation_defeats_the_linear_estimate_and_atp_star_corrects_it(planted):
    """Knockout of the saturated reader: the gate gradient through a softmax that puts 99.9% of
    each text row on the image is ~0, though cutting those edges rewrites the rows. AtP*
    recomputes the rows; choosing the heads to recompute by linear estimate skips it."""
    evaluator = _evaluator(planted, "knockout")
    model, examples = planted
    attention = image_attention(model, [ex.inputs for ex in examples]).mean(0)
    assert attention[SATURATED] > 0.99
    loo = leave_one_out(evaluator.evaluate, range(3), L, H).mean(0)
    atp = attribution_patching(evaluator)
    linear, corrected = atp.pooled("linear"), atp.pooled("corrected")
    print(f"saturated head: leave-one-out {loo[SATURATED]:.5f}, AtP {linear[SATURATED]:.5f}, "
          f"AtP* {corrected[SATURATED]:.5f}; other reader: {loo[READERS[0]]:.5f}, "
          f"{linear[READERS[0]]:.5f}, {corrected[READERS[0]]:.5f}")
    assert abs(linear[SATURATED]) < 0.01 * abs(loo[SATURATED])
    assert abs(corrected[SATURATED] - loo[SATURATED]) < 0.5 * abs(loo[SATURATED])
    for head in READERS:
        assert abs(corrected[head] - loo[head]) < abs(linear[head] - loo[head])
    one = attribution_patching(evaluator, recompute=1)
    assert (one.n_recomputed == 1).all()
    for ex in one.examples:
        assert ex.recomputed[READERS[0]] and not ex.recomputed[SATURATED]
    np.testing.assert_array_equal(one.pooled("corrected")[SATURATED], linear[SATURATED])
    np.testing.assert_array_equal(one.pooled("corrected")[READERS[0]], corrected[READERS[0]])


@pytest.mark.parametrize("mode", KEY_MODES)
def test_token_level_estimates_match_single_position_ablations(planted, mode):
    evaluator = _evaluator(planted, mode)
    est = attribution_patching(evaluator, [0]).examples[0]
    for estimate in ("linear", "corrected"):  # per query: the head's rows, split
        np.testing.assert_allclose(est.queries[estimate].sum(-1), est.heads[estimate],
                                   atol=1e-12)
    np.testing.assert_allclose(est.keys["linear"].sum(-1), est.heads["linear"], atol=1e-12)
    readers = np.zeros((L, H), dtype=bool)
    readers[tuple(zip(*READERS, strict=True))] = True
    text = query_position_scores(evaluator, 0, readers)
    atp_text = est.query_scores(readers)
    np.testing.assert_array_equal(atp_text.positions, text.positions)
    np.testing.assert_allclose(atp_text.scores, text.scores, rtol=0.2,
                               atol=0.05 * np.abs(text.scores).max())
    keys = est.key_scores(readers)
    one_key = torch.zeros(len(keys.positions), evaluator.layout(0).seq_len, dtype=torch.bool)
    one_key[torch.arange(len(keys.positions)), torch.as_tensor(keys.positions)] = True
    ablated = evaluator.evaluate(0, np.repeat(~readers[None], len(one_key), 0), keys=one_key)
    measured = est.clean - ablated
    np.testing.assert_allclose(keys.scores, measured, atol=0.05 * np.abs(measured).max())
    assert np.corrcoef(keys.scores, measured)[0, 1] > 0.99


def test_the_suffix_run_on_the_prefix_equals_the_full_run(planted):
    """Queries from position 0 on leave no prefix to reuse: that run is a full forward with
    autograd; per query the estimates must equal the suffix run's (a head output's gradient
    does not depend on which queries are ablated)."""
    model, examples = planted
    inputs, answer = examples[0].inputs, examples[0].answer
    suffix = atp_example(model, inputs, lambda lg: lg[:, answer], "zero")
    full = atp_example(model, inputs, lambda lg: lg[:, answer], "zero", queries="all")
    assert full.query_positions[0] == 0
    where = np.searchsorted(full.query_positions, suffix.query_positions)
    np.testing.assert_array_equal(full.query_positions[where], suffix.query_positions)
    np.testing.assert_allclose(full.queries["linear"][..., where], suffix.queries["linear"],
                               rtol=1e-4, atol=1e-7)


@pytest.fixture(scope="module")
def float64_llava():
    evaluator = tiny_evaluator(n_examples=1)
    return evaluator.model.to(dtype="float64"), evaluator.examples[0]


def test_linear_estimates_are_the_derivative_of_the_real_ablation(float64_llava):
    """AtP is exact to first order: for a baseline t of the way from the clean keys/values
    (baseline_kv), or the edges' weights scaled by exp(-t) (knockout's gate), the real
    single-head ablation moves the target by t times the linear estimate as t -> 0 (central
    differences: TransformerLens's softmax runs in float32 even in a float64 model, so t stays
    well above its rounding); so does AtP*."""
    model, ex = float64_llava
    inputs, answer, t = ex.inputs, ex.answer, 3e-2
    target = lambda logits: logits[:, answer]  # noqa: E731
    loo = torch.ones(L * H, L, H, dtype=model.dtype)
    loo.view(L * H, -1).fill_diagonal_(0)
    clean, blank = kv_baseline(model, inputs), kv_baseline(model, blank_image(inputs))

    def toward_blank(step: float) -> KVBaseline:
        return KVBaseline(*([c + step * (b - c) for c, b in zip(cs, bs, strict=True)]
                            for cs, bs in ((clean.keys, blank.keys), (clean.values, blank.values))))

    def ablated(step: float) -> np.ndarray:
        return evaluate_head_masks(
            model, inputs, loo, target, "baseline_kv", baseline=toward_blank(step),
            queries="text_after_image", keys="image").numpy().reshape(L, H)

    def corrected(step: float) -> np.ndarray:
        return atp_example(model, inputs, target, "baseline_kv",
                           baseline=toward_blank(step)).heads["corrected"]

    slope = (ablated(-t) - ablated(t)) / (2 * t)
    far = atp_example(model, inputs, target, "baseline_kv", baseline=blank).heads
    np.testing.assert_allclose(far["linear"], slope, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose((corrected(t) - corrected(-t)) / (2 * t), slope, rtol=1e-3,
                               atol=1e-6)
    assert np.abs(far["corrected"] - far["linear"]).max() > 1e-5  # the full step is not linear

    layout = model.layout(**inputs)

    def gated(layer: int, head: int, step: float) -> float:
        def gate(mask, hook):
            edges = _edges(layout, *mask.shape[-2:]) & (torch.arange(H) == head)[:, None, None]
            return mask.expand(-1, H, -1, -1) - step * edges

        hooks = [(f"blocks.{layer}.attn.hook_attn_mask", gate)]
        return target(model.run_with_hooks(inputs, fwd_hooks=hooks)[:, -1]).item()

    slope = np.array([[(gated(layer, head, -t) - gated(layer, head, t)) / (2 * t)
                       for head in range(H)] for layer in range(L)])
    knockout = atp_example(model, inputs, target, "knockout").heads["linear"]
    np.testing.assert_allclose(knockout, slope, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize(("mode", "baseline", "forwards"), [
    ("knockout", "mean", 1), ("baseline_kv", "blank", 2), ("baseline_kv", "mean", 2),
    ("zero", "mean", 1),
])
def test_one_clean_forward_one_baseline_forward_one_backward_per_example(monkeypatch, mode,
                                                                          baseline, forwards):
    """Per example: the clean forward (kept as the prefix), the baseline's forward (the
    dataset-mean baseline reads every example once), and autograd over the text suffix only:
    one forward of the positions after the prefix and one backward."""
    evaluator = tiny_evaluator(n_examples=2, config=replace(TINY_CONFIG, mode=mode,
                                                            baseline=baseline))
    seq_len = evaluator.model.layout(**evaluator.examples[0].inputs).seq_len  # no forward
    counts = {"full": 0, "suffix": 0, "backward": 0}
    bridge_call, grad = HookedVLM._bridge_call, torch.autograd.grad

    def counting_call(self, ids, *args, **kwargs):
        counts["full" if ids.shape[1] == seq_len else "suffix"] += 1
        return bridge_call(self, ids, *args, **kwargs)

    def counting_grad(*args, **kwargs):
        counts["backward"] += 1
        return grad(*args, **kwargs)

    monkeypatch.setattr(HookedVLM, "_bridge_call", counting_call)
    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    monkeypatch.setattr(torch.Tensor, "backward", lambda *a, **k: pytest.fail("backward()"))
    atp = attribution_patching(evaluator)
    assert counts == {"full": 2 * forwards, "suffix": 2, "backward": 2}
    assert atp.scores().shape == (2, L, H) and np.isfinite(atp.scores()).all()
    assert (atp.n_recomputed == (L * H if mode in KEY_MODES else 0)).all()


def test_clear_errors(planted):
    model, examples = planted
    knockout = _evaluator(planted, "knockout")
    for bad in (-1, L * H + 1, True, 1.5):
        with pytest.raises(InterventionError, match="recompute must be None"):
            attribution_patching(knockout, [0], recompute=bad)
    with pytest.raises(InterventionError, match="nothing to recompute"):
        attribution_patching(_evaluator(planted, "zero"), [0], recompute=2)
    est = attribution_patching(_evaluator(planted, "zero"), [0]).examples[0]
    heads = np.ones((L, H), dtype=bool)
    assert est.query_scores(heads).scores.shape == est.query_positions.shape
    with pytest.raises(ValueError, match="ablates head outputs"):
        est.key_scores(heads)
    with pytest.raises(ValueError, match="bool \\[n_layers, n_heads\\]"):
        est.query_scores(np.ones((H, L), dtype=bool))
    with pytest.raises(ValueError, match="unknown estimate"):
        est.query_scores(heads, "exact")
    with pytest.raises(IndexError, match="example 3 does not exist"):
        attribution_patching(knockout, [3])
    inputs = examples[0].inputs

    def edit(pattern, hook):
        return pattern * 0.5

    with model.hooks([("blocks.1.attn.hook_pattern", edit)]), pytest.raises(
            InterventionError, match="a hook edits hook_pattern"):
        atp_example(model, inputs, lambda lg: lg[:, 0], "knockout")
    batch = {k: torch.cat([v, v]) for k, v in inputs.items()}
    with pytest.raises(InterventionError, match="one example at a time"):
        atp_example(model, batch, lambda lg: lg[:, 0], "knockout")
    with pytest.raises(InterventionError, match="to \\[1\\]"):
        atp_example(model, inputs, lambda lg: lg[0, :2], "knockout")
    with pytest.raises(InterventionError, match="needs baseline"):
        atp_example(model, inputs, lambda lg: lg[:, 0], "baseline_kv")
    with pytest.raises(InterventionError, match="nothing to attribute"):
        atp_example(model, inputs, lambda lg: lg[:, 0], "knockout", queries=[1])  # before it
    with torch.inference_mode(), pytest.raises(InterventionError, match="inference_mode"):
        atp_example(model, inputs, lambda lg: lg[:, 0], "knockout")


def test_readme_atp_example_runs(planted, capsys):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### Attribution patching (AtP)", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope = {"evaluator": _evaluator(planted, "baseline_kv"),  # what the section before builds
             "attribution": SimpleNamespace(pooled_coef=np.arange(L * H).reshape(L, H))}
    exec(compile(code, "README-atp", "exec"), scope)
    assert scope["atp"].pooled().shape == (L, H) and "[8 8 8]" in capsys.readouterr().out
