"""Attribution patching (AtP): every head's ablation effect from one forward and one backward.

The regression (:mod:`.fit`) measures the target under thousands of random head masks per
example. Attribution patching (Nanda 2023; Kramár et al. 2024, "AtP*") estimates, for every
head at once, the effect of ablating that head alone (every other head kept, what leave-one-out
measures) from one clean forward, one baseline forward (the baseline keys/values, shared with
the regression; none for ``"knockout"``) and one backward of the target to every layer's
``hook_z``. The ablation is the regression's own
(``mode``, ``queries``, ``keys`` of :class:`~hooked_vlm.attribution.AttributionConfig`); with
``S`` a head's scores (``hook_attn_scores``), ``A`` its pattern, ``v`` its values and
``g_q = ∂y/∂z_q`` from the backward (so ``∂y/∂S_qk = A_qk (g_q·v_k − g_q·z_q)``):

``"baseline_kv"``
    the gradient with respect to the head's image keys and values as its text queries see
    them, times (baseline − clean): ``Δy ≈ Σ ∂y/∂S_qk ΔS_qk + A_qk g_q·(v_b,k − v_k)`` over the
    ablated edges, with ``ΔS_qk = scale · q_q·(k_b,k − k_k)``.
``"knockout"``
    the gradient with respect to a gate on each ablated edge (its weight ``exp(S_qk)`` times
    ``γ``, from 1 to 0): ``Δy ≈ −Σ ∂y/∂S_qk``.
``"zero"`` / ``"mean"``
    ``Δy ≈ Σ_q g_q·(ref − z_q)``: linear in the head output itself; nothing to correct.

**AtP*** (Kramár et al.'s fix for attention saturation). Through a saturated softmax the
gradient vanishes: a head that puts 99% of a text row's weight on the image has
``∂y/∂S ≈ 0`` on those edges, so its linear estimate is near 0 although cutting them rewrites
the row (a false negative). The correction recomputes the head's ablated attention rows
exactly (a softmax per head and text row, from the recorded scores) and linearises only from
the head output on: ``Δy ≈ Σ_q g_q·(z'_q − z_q)``. ``recompute`` chooses the heads: every head
(default: it costs one softmax over the text rows per head, and the failures it fixes are
*small* linear estimates, which a choice by size would skip), or the ``k`` heads with the
largest linear estimate; :attr:`AtPExample.n_recomputed` says how many were. Not done here:
AtP*'s GradDrop (one more backward per layer, against cancellation between layers).

Scores are estimated *drops*, ``y(clean) − y(head ablated)``: the sign of the regression's keep
coefficients β and of leave-one-out. AtP estimates leave-one-out; β averages a head's effect
over random contexts in which about ``alpha`` of the other heads are ablated too, so where heads
back each other up (OR-like redundancy) leave-one-out and AtP see little and β sees it.

Token level: the same estimates per text query position (the head ablated for that query only)
and per key (that image token alone replaced or cut, for every text query), per head; sum them
over the heads you choose (:meth:`AtPExample.query_scores`, :meth:`AtPExample.key_scores`).

Cost: nothing before the first ablated query depends on an ablated edge, so the clean forward
is kept as a reused prefix (:class:`~hooked_vlm.interventions.PrefixCache`, fused attention, no
autograd), and autograd runs over the text suffix only: one suffix forward recording the
attention rows, one backward. On a medium LLaVA (576 image + 21 text tokens) that is about 1.2
forwards, plus the baseline's forward (``benchmarks/atp.py``). Attention must be recomputed by
the bridge (key modes), and a hook that edits the pattern after the softmax is refused: AtP*
recomputes patterns from scores (edits of the mask or the scores are seen and kept).

Example:
    >>> atp = attribution_patching(evaluator)                 # evaluator: the regression's
    >>> atp.pooled().shape, atp.n_recomputed                  # [L, H]; per example
    >>> spearmanr(atp.pooled("linear").ravel(), attribution.pooled_coef.ravel())
    >>> atp.examples[0].query_scores(top_heads(atp.pooled(), 10)).scores
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import einops
import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from hooked_vlm.attribution.evaluate import Evaluator
from hooked_vlm.attribution.token_level import KEY_MODES, PositionScores
from hooked_vlm.interventions._common import InterventionError, check_mode, editable_attention
from hooked_vlm.interventions.ablation import ABLATION_MODES, KVBaseline
from hooked_vlm.interventions.knockout import edge_mask
from hooked_vlm.interventions.prefix import PrefixCache
from hooked_vlm.interventions.selectors import Selector, resolve

if TYPE_CHECKING:
    from hooked_vlm.model import HookedVLM

ESTIMATES = ("linear", "corrected")


@dataclass
class AtPExample:
    """AtP of one example; every score is an estimated drop ``y(clean) − y(ablated)``.

    ``heads[estimate]`` ``[n_layers, n_heads]``; ``queries[estimate]`` ``[n_layers, n_heads,
    n_queries]`` at ``query_positions`` (``query_tokens``: their strings when the model has a
    tokenizer); ``keys[estimate]`` ``[n_layers, n_heads, n_keys]`` at ``key_positions`` (no
    keys for the head-output modes); ``recomputed`` bool ``[n_layers, n_heads]``: the heads
    whose "corrected" estimate AtP* recomputed (elsewhere it is the linear one); ``clean``:
    the target of the clean run.
    """

    mode: str
    heads: dict[str, np.ndarray]
    queries: dict[str, np.ndarray]
    keys: dict[str, np.ndarray]
    query_positions: np.ndarray
    key_positions: np.ndarray
    recomputed: np.ndarray
    clean: float
    query_tokens: list[str] | None = None

    @property
    def n_recomputed(self) -> int:
        return int(self.recomputed.sum())

    def query_scores(self, heads: np.ndarray, estimate: str = "corrected") -> PositionScores:
        """Estimated drop when ``heads`` (bool ``[L, H]``) are ablated for one text query at a
        time (what :func:`~hooked_vlm.attribution.query_position_scores` measures); its
        ``reference`` is the estimate with them ablated at every query at once.

        Example:
            >>> atp.examples[0].query_scores(top_heads(atp.pooled(), 10)).scores
        """
        chosen = _chosen(heads, self.recomputed.shape)
        return PositionScores(
            positions=self.query_positions, scores=self.queries[_estimate(estimate)][chosen].sum(0),
            tokens=self.query_tokens, reference=float(self.heads[estimate][chosen].sum()),
        )

    def key_scores(self, heads: np.ndarray, estimate: str = "corrected") -> PositionScores:
        """Estimated drop when one key (image token) at a time is ablated in ``heads`` for
        every text query (what :func:`~hooked_vlm.attribution.image_token_scores` fits).

        Example:
            >>> atp.examples[0].key_scores(top_heads(atp.pooled(), 10)).scores   # [n_image]
        """
        if self.mode not in KEY_MODES:
            raise ValueError(
                f"mode {self.mode!r} ablates head outputs, not keys: there are no per-key "
                f"estimates. Use one of {', '.join(KEY_MODES)}."
            )
        chosen = _chosen(heads, self.recomputed.shape)
        return PositionScores(
            positions=self.key_positions, scores=self.keys[_estimate(estimate)][chosen].sum(0),
            tokens=None, reference=float(self.heads[estimate][chosen].sum()),
        )


@dataclass
class AtP:
    """AtP of several examples: per example (:attr:`examples`) and pooled (the mean over
    examples, as the regression's pooled β is the mean of per-example β for OLS)."""

    mode: str
    examples: list[AtPExample] = field(repr=False)

    def scores(self, estimate: str = "corrected") -> Float[np.ndarray, "n_examples L H"]:
        """Per-example head scores ``[n_examples, n_layers, n_heads]``."""
        return np.stack([ex.heads[_estimate(estimate)] for ex in self.examples])

    def pooled(self, estimate: str = "corrected") -> Float[np.ndarray, "L H"]:
        """Head scores averaged over examples ``[n_layers, n_heads]``."""
        return self.scores(estimate).mean(0)

    @property
    def n_recomputed(self) -> np.ndarray:
        """Heads AtP* recomputed, per example ``[n_examples]``."""
        return np.array([ex.n_recomputed for ex in self.examples])

    @property
    def clean(self) -> np.ndarray:
        """Targets of the clean runs ``[n_examples]``."""
        return np.array([ex.clean for ex in self.examples])


def attribution_patching(
    evaluator: Evaluator,
    examples: Iterable[int] | None = None,
    recompute: int | None = None,
) -> AtP:
    """AtP of every head on ``examples`` (default: all) under the evaluator's own ablation,
    baseline and target: the regression's run, without its masks.

    ``recompute``: heads AtP* recomputes per example (None: every head; ``k``: the ``k`` with
    the largest linear estimate). The dataset-mean baseline is computed once (one forward per
    example) or read from the store the evaluator was prepared with.

    Example:
        >>> atp = attribution_patching(Evaluator(model, examples, AttributionConfig()))
        >>> atp.pooled("corrected"), atp.pooled("linear"), atp.n_recomputed
    """
    indices = range(evaluator.n_examples) if examples is None else list(examples)
    out = []
    for i in indices:
        ablation = evaluator.ablation(i)  # checks the index
        ex = evaluator.examples[i]
        out.append(atp_example(
            evaluator.model, ex.inputs, lambda logits, ex=ex: evaluator.target(logits, ex),
            evaluator.config.mode, recompute=recompute, **ablation,
        ))
    return AtP(evaluator.config.mode, out)


def atp_example(
    model: HookedVLM,
    inputs: Mapping[str, Any],
    target: Callable[[Tensor], Tensor],
    mode: str = "baseline_kv",
    *,
    queries: Selector = "text_after_image",
    keys: Selector = "image",
    baseline: KVBaseline | None = None,
    mean: Float[Tensor, "n_layers n_heads d_head"] | None = None,
    recompute: int | None = None,
) -> AtPExample:
    """AtP of every head on one example (``inputs`` of batch 1): the clean forward (kept as a
    prefix), a forward of the text suffix with autograd, one backward.

    ``target`` maps the last position's logits ``[1, vocab]`` to ``[1]``; ``mode``,
    ``queries``, ``keys``, ``baseline`` and ``mean`` are those of
    :func:`~hooked_vlm.interventions.head_ablation`.

    Example:
        >>> est = atp_example(model, inputs, lambda lg: lg[:, answer], "knockout")
        >>> est.heads["corrected"]                     # [L, H] estimated drops
    """
    check_atp(model, mode, recompute)
    if torch.is_inference_mode_enabled():
        raise InterventionError(
            "attribution patching takes a backward: call it outside torch.inference_mode()."
        )
    cfg = model.cfg
    layout = model.layout(**inputs)
    if layout.batch_size != 1:
        raise InterventionError(
            f"attribution patching takes one example at a time; got a batch of "
            f"{layout.batch_size}."
        )
    q_pos = resolve(layout, queries)
    key_mode = mode in KEY_MODES
    k_pos = resolve(layout, keys) if key_mode else None
    start = q_pos.first_reaching(k_pos) if k_pos is not None else q_pos.first()
    positions = torch.arange(layout.seq_len)
    rows = (q_pos.mask[0] & (positions >= start)).nonzero().flatten()
    cols = k_pos.mask[0].nonzero().flatten() if k_pos is not None else rows[:0]
    layers = list(range(cfg.n_layers))
    if key_mode:
        _check_baseline(mode, baseline, cols)
    if mode == "mean" and (mean is None or tuple(mean.shape) != (
            cfg.n_layers, cfg.n_heads, cfg.d_head)):
        raise InterventionError(
            f"mode 'mean' needs mean=[n_layers, n_heads, d_head] = "
            f"{(cfg.n_layers, cfg.n_heads, cfg.d_head)} (see mean_head_outputs)."
        )
    if not len(rows):
        raise InterventionError(
            f"no {queries!r} query reaches a {keys!r} key: the ablation changes nothing, so "
            "there is nothing to attribute."
        )
    recorder = _Recorder(rows.to(model.device), layout.seq_len, mode)
    clean = _forward_backward(model, inputs, target, start, recorder)
    edges = None
    if k_pos is not None:  # the ablation's own edges (causal, or within a bidirectional block)
        suffix = torch.zeros(1, 1, layout.seq_len - start, layout.seq_len, dtype=torch.bool)
        edges = edge_mask(suffix, q_pos, k_pos, query_start=start)[0, 0][rows - start][:, cols]
    layer_math = [
        _LayerMath(model, layer, mode, recorder.layers[layer], edges, cols, baseline, mean)
        for layer in layers
    ]
    linear = [np.stack(part) for part in zip(*(m.linear() for m in layer_math), strict=True)]
    chosen = (_recompute_set(linear[0], recompute) if key_mode
              else np.zeros_like(linear[0], dtype=bool))
    corrected = [part.copy() for part in linear]
    for layer, m in enumerate(layer_math):
        which = np.flatnonzero(chosen[layer])
        if which.size:
            exact = m.exact(torch.as_tensor(which, device=model.device))
            for part, values in zip(corrected, exact, strict=True):
                part[layer, which] = values
    tokens = None
    if model.tokenizer is not None:
        all_tokens = model.to_str_tokens(torch.as_tensor(inputs["input_ids"])[0])
        tokens = [all_tokens[int(p)] for p in rows]
    heads, per_query, per_key = ({"linear": a, "corrected": b}
                                 for a, b in zip(linear, corrected, strict=True))
    return AtPExample(
        mode=mode, heads=heads, queries=per_query, keys=per_key,
        query_positions=rows.numpy(), key_positions=cols.numpy(), recomputed=chosen,
        clean=clean, query_tokens=tokens,
    )


def _forward_backward(
    model: HookedVLM,
    inputs: Mapping[str, Any],
    target: Callable[[Tensor], Tensor],
    start: int,
    recorder: _Recorder,
) -> float:
    """The clean forward under ``recorder``'s hooks, then the backward of the target to every
    layer's ``hook_z`` (kept as ``g`` in the records); returns the clean target. Nothing before
    ``start`` depends on an ablated edge, so the clean forward is kept as a prefix and autograd
    runs over the suffix only (the whole sequence when ``start`` is 0)."""
    n_layers, seq_len = model.cfg.n_layers, recorder.seq_len
    last = int(model.layout(**inputs).select("last")[0][0])
    if start > 0:
        with model.hooks(recorder.prefix_hooks(n_layers)):
            prefix = PrefixCache.build(model, inputs, start)
    with torch.enable_grad():
        logits = (prefix.run(recorder.hooks(n_layers), grad=True) if start > 0
                  else model.run_with_hooks(inputs, fwd_hooks=recorder.hooks(n_layers)))
        y = target(logits[:, last - (seq_len - logits.shape[1])])
        if tuple(y.shape) != (1,):
            raise InterventionError(
                f"the target must map logits [1, vocab] to [1]; got shape {tuple(y.shape)}."
            )
        grads = torch.autograd.grad(y.sum(), recorder.deltas, allow_unused=True)
    for layer, (delta, grad) in enumerate(zip(recorder.deltas, grads, strict=True)):
        recorder.layers[layer]["g"] = torch.zeros_like(delta) if grad is None else grad
    return float(y.detach().float()[0])


# ---------------------------------------------------------------------- the forward's record
class _Recorder:
    """Forward hooks keeping, per layer, what the estimates need at the query ``rows`` (scores,
    pattern, rotated queries, every position's values), and adding a zero leaf ``delta`` to
    ``hook_z`` there: the backward's ``∂y/∂delta`` is ``∂y/∂z`` at those rows. A forward may
    cover the whole sequence or its last positions only (a suffix on a reused prefix, whose
    values :meth:`prefix_hooks` keep while the prefix is built)."""

    def __init__(self, rows: Tensor, seq_len: int, mode: str) -> None:
        self.rows, self.seq_len, self.mode = rows, seq_len, mode
        self.layers: dict[int, dict[str, Tensor]] = {}
        self.deltas: list[Tensor] = []

    def prefix_hooks(self, n_layers: int) -> list[tuple[str, Callable[..., Any]]]:
        return [(f"blocks.{layer}.attn.hook_v", self._values(layer, "prefix_v"))
                for layer in range(n_layers)]

    def hooks(self, n_layers: int) -> list[tuple[str, Callable[..., Any]]]:
        out: list[tuple[str, Callable[..., Any]]] = []
        for layer in range(n_layers):
            prefix = f"blocks.{layer}.attn."
            out += [(prefix + "hook_v", self._values(layer, "v")),
                    (prefix + "hook_z", self._delta(layer))]
            if self.mode in KEY_MODES:
                out += [(prefix + "hook_attn_scores", self._rows(layer, "scores", 2)),
                        (prefix + "hook_pattern", self._rows(layer, "pattern", 2))]
            if self.mode == "baseline_kv":
                out.append((prefix + "hook_rot_q", self._rows(layer, "q", 1)))
        return out

    def _record(self, layer: int) -> dict[str, Tensor]:
        return self.layers.setdefault(layer, {})

    def _local(self, t: Tensor, dim: int) -> Tensor:
        """The rows as indices of ``t``, which holds the last ``t.shape[dim]`` positions."""
        return self.rows - (self.seq_len - t.shape[dim])

    def _values(self, layer: int, name: str) -> Callable[[Tensor, object], None]:
        def hook(v: Tensor, hook: object) -> None:
            record = self._record(layer)
            v = v.detach()[0]
            if name == "v" and v.shape[0] < self.seq_len:  # a suffix: the prefix's first
                v = torch.cat([record["prefix_v"][: self.seq_len - v.shape[0]], v])
            record[name] = v

        return hook

    def _rows(self, layer: int, name: str, dim: int) -> Callable[[Tensor, object], None]:
        def hook(t: Tensor, hook: object) -> None:
            t = t.index_select(dim, self._local(t, dim)).detach()[0]
            missing = self.seq_len - t.shape[-1]
            if name in ("scores", "pattern") and missing:  # a sliding window's cache: the keys
                fill = torch.finfo(t.dtype).min if name == "scores" else 0.0  # before it are
                t = torch.cat([t.new_full((*t.shape[:-1], missing), fill), t], -1)  # masked
            self._record(layer)[name] = t

        return hook

    def _delta(self, layer: int) -> Callable[[Tensor, object], Tensor]:
        def hook(z: Tensor, hook: object) -> Tensor:
            rows = self._local(z, 1)
            self._record(layer)["z"] = z.index_select(1, rows).detach()[0]
            delta = torch.zeros_like(z[:, rows], requires_grad=True)
            self.deltas.append(delta)
            return z.index_add(1, rows, delta)

        return hook


# ---------------------------------------------------------------------- one layer's estimates
class _LayerMath:
    """A layer's estimates from its record, in float64. ``h`` heads, ``q`` query rows, ``n``
    positions, ``k`` ablated keys. :meth:`linear` gives (heads ``[h]``, per query ``[h, q]``,
    per key ``[h, k]``) drops; :meth:`exact` the same for some heads, attention recomputed."""

    def __init__(self, model: HookedVLM, layer: int, mode: str, record: dict[str, Tensor],
                 edges: Tensor | None, cols: Tensor, baseline: KVBaseline | None,
                 mean: Tensor | None) -> None:
        cfg, device = model.cfg, model.device
        self.mode = mode
        group = cfg.n_heads // cfg.n_kv_heads
        self.g = record["g"][0].double()  # [q, h, d]
        if mode not in KEY_MODES:
            z = record["z"].double()
            ref = torch.zeros_like(z) if mode == "zero" else mean[layer].to(z).expand_as(z)
            self.output_change = ref - z
            return
        scores = record["scores"]  # [h, q, n]
        self.open = scores > torch.finfo(scores.dtype).min / 2
        self.s = scores.double()
        self.a = record["pattern"].double()
        _check_pattern(self.s, self.a, scores.dtype, layer)
        self.v = einops.repeat(record["v"].double(), "n g d -> n (g r) d", r=group)
        self.cols = cols.to(device)
        self.edges = edges.to(device)[None] & self.open[..., self.cols]  # [h, q, k]
        self.gv = einops.einsum(self.g, self.v, "q h d, n h d -> h q n")
        self.gz = (self.a * self.gv).sum(-1)  # [h, q]
        grad_s = self.a * (self.gv - self.gz[..., None])  # ∂y/∂S
        self.grad_s = grad_s[..., self.cols]
        if mode == "baseline_kv":
            attn = model.bridge.blocks[layer].attn.original_component
            scale = getattr(attn, "scaling", cfg.d_head**-0.5)
            base_k = einops.repeat(baseline.keys[layer][0, cols].to(device).double(),
                                   "k g d -> k (g r) d", r=group)
            base_v = einops.repeat(baseline.values[layer][0, cols].to(device).double(),
                                   "k g d -> k (g r) d", r=group)
            q = record["q"].double()  # [q, h, d]
            self.alt = scale * einops.einsum(q, base_k, "q h d, k h d -> h q k")
            softcap = getattr(attn, "attn_logit_softcapping", None)
            if softcap is not None:  # as HF and the ablation cap the logits
                self.alt = torch.tanh(self.alt / softcap) * softcap
            self.gdv = einops.einsum(self.g, base_v - self.v[self.cols], "q h d, k h d -> h q k")

    def linear(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.mode not in KEY_MODES:
            change = einops.einsum(self.g, self.output_change, "q h d, q h d -> h q")
            return _drops_rows(change)
        if self.mode == "knockout":
            edge = -self.grad_s
        else:
            d_scores = self.alt - self.s[..., self.cols]
            edge = self.grad_s * d_scores + self.a[..., self.cols] * self.gdv
        edge = torch.where(self.edges, edge, 0.0)
        return _drops_edges(edge)

    def exact(self, heads: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """AtP* for ``heads``: each head's ablated rows recomputed by an exact softmax (all
        keys at once: per query; one key at a time: per key), linear from ``hook_z`` on."""
        s, edges, gv, is_open = self.s[heads], self.edges[heads], self.gv[heads], self.open[heads]
        old = torch.softmax(s, -1)
        gz = (old * gv).sum(-1)
        full = torch.zeros_like(is_open)
        full[..., self.cols] = edges
        if self.mode == "knockout":
            cut = s.masked_fill(full, float("-inf"))
            if bool((~(is_open & ~full).any(-1) & is_open.any(-1)).any()):
                raise InterventionError(
                    "knockout removes every key of a text query row in some head: its softmax "
                    "is undefined (the ablation itself refuses it). Keep at least one key per "
                    "query."
                )
            new = torch.softmax(cut, -1)
            per_query = (new * gv).sum(-1) - gz
            gv_new = torch.zeros_like(edges, dtype=s.dtype)  # a cut key's weight is 0
            weight_new = torch.zeros_like(gv_new)
        else:
            alt, gdv = self.alt[heads], self.gdv[heads]
            swapped = s.clone()
            swapped[..., self.cols] = torch.where(edges, alt, s[..., self.cols])
            new = torch.softmax(swapped, -1)
            per_query = (new * gv).sum(-1) + (new[..., self.cols] * gdv * edges).sum(-1) - gz
            log_norm = torch.logsumexp(s, -1, keepdim=True)
            weight_new = torch.exp((alt - log_norm).clamp(max=700.0))  # unnormalised, / Σ old
            gv_new = gv[..., self.cols] + gdv
        rest_w, rest_g = _others(old, gv, self.cols)
        per_key = (rest_g + weight_new * gv_new) / (rest_w + weight_new) - gz[..., None]
        per_key = torch.where(edges, per_key, 0.0)
        if not bool(per_key.isfinite().all()):
            raise InterventionError(
                "AtP* per-key estimates are not finite: some text row keeps no weight outside "
                "a single key (a degenerate pattern); use the linear estimates."
            )
        return (-per_query.sum(-1)).cpu().numpy(), (-per_query).cpu().numpy(), (
            -per_key.sum(1)).cpu().numpy()


def _others(a: Tensor, gv: Tensor, cols: Tensor) -> tuple[Tensor, Tensor]:
    """For each row and key ``k`` of ``cols``: the weight of the row's other keys,
    ``1 − a_k``, and their share of ``g·z``, ``Σ_{j≠k} a_j g·v_j`` ``[h, q, k]``, summed
    directly (not by subtraction) where ``k`` is the row's heaviest key, so a saturated key's
    remainder keeps its digits."""
    top = a.argmax(-1, keepdim=True)  # [h, q, 1]
    mask = torch.zeros_like(a, dtype=torch.bool).scatter_(-1, top, True)
    rest_w = a.masked_fill(mask, 0.0).sum(-1, keepdim=True)
    rest_g = (a * gv).masked_fill(mask, 0.0).sum(-1, keepdim=True)
    a_k, gv_k = a[..., cols], gv[..., cols]
    is_top = cols[None, None, :] == top
    gz = (a * gv).sum(-1, keepdim=True)
    return (torch.where(is_top, rest_w, 1.0 - a_k), torch.where(is_top, rest_g, gz - a_k * gv_k))


def _drops_edges(edge: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-edge changes ``[h, q, k]`` -> drops per head, per query, per key."""
    return ((-edge.sum((1, 2))).cpu().numpy(), (-edge.sum(2)).cpu().numpy(),
            (-edge.sum(1)).cpu().numpy())


def _drops_rows(change: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-query changes ``[h, q]`` -> drops per head, per query (and no keys)."""
    return ((-change.sum(1)).cpu().numpy(), (-change).cpu().numpy(),
            np.zeros((change.shape[0], 0)))


def _check_pattern(scores: Tensor, pattern: Tensor, dtype: torch.dtype, layer: int) -> None:
    """The recorded pattern must be the softmax of the recorded scores (a hook editing the
    pattern would make every recomputation wrong)."""
    tolerance = max(1e-5, 8 * torch.finfo(dtype).eps)
    gap = float((torch.softmax(scores, -1) - pattern).abs().max())
    if gap > tolerance:
        raise InterventionError(
            f"layer {layer}: the attention pattern differs from the softmax of its scores by "
            f"{gap:.2g}: a hook edits hook_pattern. Attribution patching recomputes patterns "
            "from scores; apply such edits through hook_attn_mask or hook_attn_scores (e.g. "
            "knockout mode 'mask') instead."
        )


def check_atp(model: HookedVLM, mode: str, recompute: int | None = None) -> None:
    """Raise :class:`InterventionError` unless attribution patching of ``mode`` (with AtP*'s
    ``recompute``) can run on ``model``: what it checks before any forward (a study calls it
    before it writes anything).

    Example:
        >>> check_atp(model, "knockout")        # raises on attention it cannot recompute
    """
    check_mode(mode, ABLATION_MODES, "attribution patching")
    if mode not in KEY_MODES:
        if recompute is not None:
            raise InterventionError(
                f"mode {mode!r} ablates the head output itself: its linear estimate is exact at "
                "the head, and AtP* has nothing to recompute (leave recompute=None)."
            )
        return
    editable_attention(model, list(range(model.cfg.n_layers)),
                       f"attribution patching of mode {mode!r}")
    for layer in range(model.cfg.n_layers):
        attn = model.bridge.blocks[layer].attn.original_component
        if getattr(attn, "sinks", None) is not None:
            raise InterventionError(
                f"attribution patching of mode {mode!r} recomputes attention from its scores and "
                f"does not model attention sinks (layer {layer}); use mode 'zero' or 'mean' on "
                "this architecture."
            )


def _check_baseline(mode: str, baseline: KVBaseline | None, cols: Tensor) -> None:
    if mode != "baseline_kv":
        return
    if baseline is None:
        raise InterventionError("mode 'baseline_kv' needs baseline=kv_baseline(...).")
    reach = baseline.keys[0].shape[1]
    if int(cols.max()) >= reach:
        raise InterventionError(
            f"the baseline keys/values cover positions 0..{reach - 1}, but the ablated keys "
            f"reach position {int(cols.max())}: build the baseline from inputs laid out like "
            "these (kv_baseline of the same prompt with another image)."
        )


def _recompute_set(linear: np.ndarray, recompute: int | None) -> np.ndarray:
    """Bool ``[L, H]``: every head, or the ``recompute`` largest ``|linear|`` (ties by index)."""
    if recompute is None:
        return np.ones_like(linear, dtype=bool)
    if isinstance(recompute, bool) or not isinstance(recompute, int) or not (
            0 <= recompute <= linear.size):
        raise InterventionError(
            f"recompute must be None (every head) or a head count 0..{linear.size}; got "
            f"{recompute!r}."
        )
    chosen = np.zeros(linear.size, dtype=bool)
    chosen[np.argsort(-np.abs(linear.ravel()), kind="stable")[:recompute]] = True
    return chosen.reshape(linear.shape)


def _chosen(heads: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    heads = np.asarray(heads)
    if heads.shape != shape or heads.dtype != bool or not heads.any():
        raise ValueError(
            f"heads must be a bool [n_layers, n_heads] = {list(shape)} array with some True "
            f"(e.g. top_heads(scores, k)); got {heads.dtype} {list(heads.shape)}."
        )
    return heads


def _estimate(name: str) -> str:
    if name not in ESTIMATES:
        raise ValueError(f"unknown estimate {name!r}; accepted: {', '.join(ESTIMATES)}.")
    return name
