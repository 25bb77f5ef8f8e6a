"""Prefix reuse: compute the clean keys/values once, recompute only the suffix under hooks.

An intervention that changes nothing before position ``t`` (``Hooks.start``) leaves every
earlier position's keys and values as they are in the clean run. :class:`PrefixCache` runs the
clean forward once (images included), keeps its KV cache cropped to ``t`` and the merged input
embeddings of the suffix (image features or VQ codes in it included), and then runs only the
suffix ``t..end`` under each intervention. Results equal the full recompute; the cost drops
from the whole sequence to the suffix (for 576+ image tokens and ~20 text tokens, ~20×).

Example:
    >>> prefix = PrefixCache.build(model, inputs, start=layout.select("eoi")[0].min())
    >>> logits = prefix.run(knockout(model, layout, "text", "eoi"))   # [batch, suffix, vocab]
    >>> big = prefix.repeat_interleave(8)   # 8 copies per example, for 8 masks in one forward
"""

from __future__ import annotations

import copy
import inspect
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformers.cache_utils import DynamicLayer

from hooked_vlm.compat import crop_cache
from hooked_vlm.inputs import split_inputs
from hooked_vlm.interventions._common import HookFn, Hooks, InterventionError

if TYPE_CHECKING:
    from hooked_vlm.model import HookedVLM

EMBED_HOOK = "blocks.0.hook_resid_pre"


@dataclass
class PrefixCache:
    """The clean run of ``inputs``: its KV cache up to ``start`` and its suffix embeddings.

    Two things HF computes only on a prompt's first forward cannot be replayed on a cached
    suffix, so the prefix adapts: image features a family adds into the residual stream after
    some blocks (Qwen3-VL's DeepStack, ``layout.injections``) are kept for the suffix positions
    and added again there (through their hook points, so hooks on them still fire); and where a
    bidirectional attention block (Gemma 3's images, PaliGemma's prefix, Molmo 2's image tokens)
    reaches position ``start`` or beyond, nothing can be reused: every run recomputes the whole
    prompt and returns its positions from ``start`` on (with a warning; the numbers stay exact).
    """

    model: HookedVLM
    start: int
    past: Any  # transformers Cache, holding exactly ``start`` positions between runs
    suffix_ids: Tensor
    attention_mask: Tensor
    embeds: Float[Tensor, "batch suffix d_model"]
    clean_logits: Float[Tensor, "batch pos vocab"]
    # positions of the suffix where they are not text-linear (Qwen2-VL's M-RoPE), else None
    suffix_positions: Tensor | None = None
    # injection hook name -> what it added at the suffix positions, [batch, suffix, d_model]
    injected: dict[str, Tensor] = field(default_factory=dict)
    # a bidirectional block reached the suffix: the whole prompt's inputs, rerun every time
    full_inputs: dict[str, Any] | None = None
    _copies: dict[int, PrefixCache] = field(default_factory=dict, repr=False)

    @classmethod
    @torch.no_grad()
    def build(
        cls, model: HookedVLM, inputs: Mapping[str, Any], start: int | Tensor
    ) -> PrefixCache:
        """One clean forward of ``inputs``; cache its keys/values for positions ``< start``.

        Example:
            >>> prefix = PrefixCache.build(model, inputs, start=hooks.start)
        """
        ids, kw = split_inputs(inputs, {}, model.device, model.dtype)
        start = int(start)
        mask = kw.pop("attention_mask", torch.ones_like(ids))
        full = {**kw, "attention_mask": mask}
        reaches = 0 <= start < ids.shape[1] and _block_reaches(model, ids, full, start)
        if not (0 < start < ids.shape[1] or reaches):
            raise InterventionError(
                f"prefix start must be inside the sequence (1..{ids.shape[1] - 1}), got "
                f"{start}: an intervention touching position 0 cannot reuse a prefix."
            )
        if reaches:  # start 0 too: PaliGemma's prefix block opens the sequence
            return cls._recompute(model, ids, full, start)
        store: dict[str, Tensor] = {}

        def keep(name: str) -> Any:
            def hook(resid: Tensor, hook: object) -> None:
                store[name] = resid[:, start:].detach().clone()

            return hook

        injections = model.architecture.injections(model.hf_model.config)
        observers = [(EMBED_HOOK, keep("embeds")), *((i.hook, keep(i.hook)) for i in injections)]
        logits, past = model.run_with_kv_cache({"input_ids": ids, **full}, fwd_hooks=observers)
        crop_cache(past, start)
        positions = model.architecture.prompt_positions
        suffix_positions = (
            None if positions is None
            else positions(model.hf_model, ids, full)[..., start:]
        )
        injected = {i.hook: store[i.hook] for i in injections if bool(store[i.hook].any())}
        return cls(
            model, start, past, ids[:, start:], mask, store["embeds"], logits, suffix_positions,
            injected,
        )

    @classmethod
    def _recompute(
        cls, model: HookedVLM, ids: Tensor, full: dict[str, Any], start: int
    ) -> PrefixCache:
        warnings.warn(
            f"no prefix can be reused (start {start}): a bidirectional attention block of "
            f"{model.cfg.architecture} reaches position {start} or beyond, and HF builds that "
            "block only on a prompt's first forward. Every run recomputes the whole prompt "
            "(exact, slower).",
            stacklevel=3,
        )
        logits = model({"input_ids": ids, **full})
        inputs = {"input_ids": ids, **full}
        return cls(model, start, None, ids[:, start:], full["attention_mask"],
                   logits.new_empty(0), logits, full_inputs=inputs)

    @property
    def batch_size(self) -> int:
        return self.suffix_ids.shape[0]

    def run(
        self, fwd_hooks: Iterable[tuple[str, HookFn]] = (), *, last_only: bool = False,
        grad: bool = False,
    ) -> Float[Tensor, "batch suffix vocab"]:
        """Logits of the suffix positions ``start..end`` with ``fwd_hooks`` active; with
        ``last_only``, of the final position only (``[batch, 1, vocab]``: the unembedding of the
        other positions is skipped). ``grad`` records autograd's graph of the suffix run (the
        prefix's keys and values enter as constants), so that a backward costs about the
        suffix's share of one (attribution patching); off by default.

        Raises if ``fwd_hooks`` (a :class:`Hooks` list) may change a position before ``start``
        and the prefix is reused (a recomputing prefix takes any intervention).
        """
        with torch.set_grad_enabled(grad):
            return self._run(fwd_hooks, last_only)

    def _run(
        self, fwd_hooks: Iterable[tuple[str, HookFn]], last_only: bool
    ) -> Float[Tensor, "batch suffix vocab"]:
        hooks = list(fwd_hooks)
        hook_start = getattr(fwd_hooks, "start", None)
        if self.full_inputs is None and hook_start is not None and hook_start < self.start:
            raise InterventionError(
                f"this intervention changes position {hook_start}, inside the reused prefix "
                f"(positions < {self.start}): build the PrefixCache with start <= {hook_start}."
            )
        if self.full_inputs is not None:
            logits = self.model.run_with_hooks(
                self.full_inputs, fwd_hooks=hooks, **_last_only(self.model, last_only)
            )
            return logits if last_only else logits[:, self.start :]
        embeds = self.embeds

        def feed_embeds(resid: Tensor, hook: object) -> Tensor:
            return embeds

        try:
            inputs = {"input_ids": self.suffix_ids, "attention_mask": self.attention_mask}
            if self.suffix_positions is not None:
                inputs["position_ids"] = self.suffix_positions
            return self.model.run_with_hooks(
                inputs,
                cache=self.past,
                fwd_hooks=[(EMBED_HOOK, feed_embeds), *hooks, *self._replay()],
                **_last_only(self.model, last_only),
            )
        finally:  # each layer back to the prefix, also after a failure partway through
            crop_cache(self.past, self.start)

    def _replay(self) -> list[tuple[str, HookFn]]:
        """Hooks adding the kept injections after their blocks, through their hook points
        (last in line, so the block's own residual hooks see it as a full run does)."""
        config = self.model.hf_model.config
        layers = {i.hook: i.layer for i in self.model.architecture.injections(config)}
        hooks = []
        for name, added in self.injected.items():
            point, layer = self.model.bridge.hook_dict[name], layers[name]

            def add(resid: Tensor, hook: object, _point: Any = point, _added: Tensor = added
                    ) -> Tensor:
                return resid + _point(_added)

            hooks.append((f"blocks.{layer}.hook_resid_post", add))
        return hooks

    def repeat_interleave(self, n: int) -> PrefixCache:
        """A copy with every example repeated ``n`` times in a row (B masks in one forward)."""
        injected = {k: v.repeat_interleave(n, 0) for k, v in self.injected.items()}
        if self.full_inputs is not None:
            return PrefixCache(
                self.model, self.start, None, self.suffix_ids.repeat_interleave(n, 0),
                self.attention_mask.repeat_interleave(n, 0), self.embeds,
                self.clean_logits.repeat_interleave(n, 0),
                full_inputs=_repeat_batch(self.full_inputs, self.batch_size, n),
            )
        past = copy.copy(self.past)
        capacity = self.start + self.suffix_ids.shape[1]
        past.layers = [_repeated(layer, n, capacity) for layer in self.past.layers]
        return PrefixCache(
            self.model,
            self.start,
            past,
            self.suffix_ids.repeat_interleave(n, 0),
            self.attention_mask.repeat_interleave(n, 0),
            self.embeds.repeat_interleave(n, 0),
            self.clean_logits.repeat_interleave(n, 0),
            None if self.suffix_positions is None
            else self.suffix_positions.repeat_interleave(n, -2),  # [..., batch, pos]
            injected,
        )

    def repeated(self, n: int) -> PrefixCache:
        """:meth:`repeat_interleave`, memoised per ``n`` (copies are reused across runs)."""
        if n == 1:
            return self
        if n not in self._copies:
            self._copies[n] = self.repeat_interleave(n)
        return self._copies[n]

    def full_logits(self, suffix_logits: Tensor) -> Float[Tensor, "batch pos vocab"]:
        """Suffix logits glued after the clean prefix logits: the full run's logits."""
        return torch.cat([self.clean_logits[:, : self.start], suffix_logits], dim=1)


class _PrefixLayer(DynamicLayer):
    """A ``DynamicLayer`` holding a repeated prefix in a buffer with room for the suffix.

    A suffix run appends its keys/values by writing into the buffer (views are returned, as
    ``DynamicLayer`` returns its tensors), where ``DynamicLayer.update`` concatenates a new copy
    of the whole prefix in every layer of every run (a quarter of the time of a batch of head
    masks on a 576-token image prefix). ``crop`` slices the views back. Whenever the keys are
    not the buffer's (another update path, more positions than the buffer holds), it falls
    back to concatenation.
    """

    def __init__(self, keys: Tensor, values: Tensor, n: int, capacity: int) -> None:
        super().__init__()
        batch, heads, length, _ = keys.shape
        self._buffers = []
        for source in (keys, values):
            buffer = source.new_empty(batch * n, heads, capacity, source.shape[-1])
            buffer.view(batch, n, heads, capacity, -1)[:, :, :, :length] = source[:, None]
            self._buffers.append(buffer)
        self.keys = self._buffers[0][:, :, :length]
        self.values = self._buffers[1][:, :, :length]
        self.device = keys.device
        self.is_initialized = True

    def update(
        self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any
    ) -> tuple[Tensor, Tensor]:
        keys, values = self._buffers
        length = self.keys.shape[-2]
        end = length + key_states.shape[-2]
        in_place = (
            self.keys.data_ptr() == keys.data_ptr() and end <= keys.shape[-2]
            and key_states.shape[0] == keys.shape[0]
        )
        if not in_place:
            return super().update(key_states, value_states, *args, **kwargs)
        keys[:, :, length:end] = key_states
        values[:, :, length:end] = value_states
        self.keys, self.values = keys[:, :, :end], values[:, :, :end]
        return self.keys, self.values


def _repeated(layer: Any, n: int, capacity: int) -> Any:
    """``layer`` with each example repeated ``n`` times (a :class:`_PrefixLayer` when it is a
    plain ``DynamicLayer``)."""
    if isinstance(layer, DynamicLayer) and type(layer) in (DynamicLayer, _PrefixLayer):
        return _PrefixLayer(layer.keys, layer.values, n, capacity)
    layer = copy.copy(layer)
    layer.batch_repeat_interleave(n)
    return layer


def run_with_prefix(
    model: HookedVLM, inputs: Mapping[str, Any], hooks: Hooks
) -> Float[Tensor, "batch pos vocab"]:
    """Full-sequence logits under ``hooks``, recomputing only positions ``>= hooks.start``.

    Worth it when several interventions share one prefix; build a :class:`PrefixCache` then.

    Example:
        >>> logits = run_with_prefix(model, inputs, knockout(model, layout, "text", "eoi"))
    """
    prefix = PrefixCache.build(model, inputs, hooks.start)
    return prefix.full_logits(prefix.run(hooks))


def last_logits(
    model: HookedVLM,
    inputs: Mapping[str, Any],
    hooks: Iterable[tuple[str, HookFn]],
    last: Int[Tensor, " batch"],
    n: int = 1,
    prefix: PrefixCache | None = None,
) -> Float[Tensor, "batch_n vocab"]:
    """Logits at each example's ``last`` position, ``inputs`` repeated ``n`` times per example
    (``repeat_interleave``), under ``hooks``; on ``prefix`` when given.

    Example:
        >>> last_logits(model, inputs, hooks, last=torch.tensor([47, 47]), n=8, prefix=prefix)
    """
    last = last.to(model.device).repeat_interleave(n)
    rows = torch.arange(last.shape[0], device=last.device)
    final = bool((last == inputs["input_ids"].shape[1] - 1).all())
    if prefix is not None:
        if final:
            return prefix.repeated(n).run(hooks, last_only=True)[:, -1]
        return prefix.repeated(n).run(hooks)[rows, last - prefix.start]
    batch = {k: v.repeat_interleave(n, 0) if isinstance(v, Tensor) else v
             for k, v in inputs.items()}
    if final:
        return model.run_with_hooks(batch, fwd_hooks=hooks, **_last_only(model, True))[:, -1]
    return model.run_with_hooks(batch, fwd_hooks=hooks)[rows, last]


def _last_only(model: HookedVLM, last_only: bool) -> dict[str, Any]:
    """The forward keyword that computes the final position's logits only, where the HF model
    takes it (transformers' ``logits_to_keep``); nothing otherwise (all logits, then sliced)."""
    if not last_only:
        return {}
    params = inspect.signature(type(model.hf_model).forward).parameters
    return {"logits_to_keep": 1} if "logits_to_keep" in params else {}


def _block_reaches(model: HookedVLM, ids: Tensor, kw: dict[str, Any], start: int) -> bool:
    """Whether a bidirectional attention block of this forward has a position ``>= start``."""
    blocks_of = model.architecture.attention_blocks
    if blocks_of is None:
        return False
    blocks = blocks_of(model.hf_model.config, ids, kw)
    return blocks is not None and bool((blocks[:, start:] >= 0).any())


def _repeat_batch(inputs: Mapping[str, Any], batch: int, n: int) -> dict[str, Any]:
    """Every input repeated ``n`` times per example; only batch-first tensors can be."""
    out = {}
    for key, value in inputs.items():
        if isinstance(value, Tensor):
            if value.ndim == 0 or value.shape[0] != batch:
                raise InterventionError(
                    f"cannot repeat input {key!r} (shape {tuple(value.shape)}) per example: "
                    f"it is not batch-first. Run one example at a time (batch_size=1), or "
                    "reuse a prefix that ends before every bidirectional attention block."
                )
            value = value.repeat_interleave(n, 0)
        out[key] = value
    return out
