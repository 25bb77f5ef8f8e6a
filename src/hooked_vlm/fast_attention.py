"""SDPA where nothing is watched: eager attention only at layers whose internals are hooked.

TransformerLens' ``PositionEmbeddingsAttentionBridge`` recomputes every layer's attention in
Python (scores, softmax, pattern) so that ``hook_attn_scores``/``hook_pattern`` fire and can be
edited. That costs the fused kernel (SDPA / flash) on every layer, watched or not.
:class:`FastPathAttention` keeps TL's recomputation for a layer only while one of its
attention-internal hook points (scores, pattern, rotated q/k, q/k-norm outputs, ...) has a hook
attached; otherwise it calls the HF attention module itself with SDPA. Projections still run
through TL's linear bridges, so ``hook_q``/``hook_k``/``hook_v``/``hook_z``, ``hook_attn_out``
and the residual hooks fire on both paths.

Each layer also gains ``blocks.{l}.attn.hook_attn_mask``: the additive mask ``[batch, 1 or
head, query, key]`` (0 = attend, very negative = do not) that both paths add to the scores.
Hooking it (e.g. "mask" knockout) edits attention without forcing the eager path.

The HF attention modules get their own config copy set to SDPA (where SDPA computes what eager
attention does: not with logit softcapping, see :func:`sdpa_supported`). Where every decoder
layer is converted, the decoder's own config is set to SDPA too, so HF builds its SDPA mask:
None for a causal batch without padding (the kernel's ``is_causal``, as in HF's SDPA model),
a boolean mask otherwise. A clean run and a run hooked at the residual stream get the same mask
and kernel; a layer whose mask or internals are hooked gets the additive float mask HF's eager
attention would have been given (built from the layer's own cache length while decoding).

Example:
    >>> install_fast_attention(model.bridge)   # HookedVLM does this for you
    >>> model(inputs)                                             # SDPA in every layer
    >>> model.run_with_cache(inputs, names_filter="blocks.3.attn.hook_pattern")  # eager at 3
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.hook_points import HookPoint
from transformer_lens.model_bridge.generalized_components import (
    PositionEmbeddingsAttentionBridge,
)

from hooked_vlm.compat import get_cache, tl_attention_kwargs

# Hook points that TL's Python recomputation fires and the HF module does not: a hook on any
# of them keeps the layer on the eager path. hook_in/hook_out/cos/sin fire on both paths.
_BOTH_PATHS = frozenset({"hook_in", "hook_out", "hook_cos", "hook_sin", "hook_attn_mask"})
# TL config switches that restructure the attention computation (per-head results, split
# q/k/v inputs): only the recomputation honours them.
_EAGER_FLAGS = ("use_attn_result", "use_split_qkv_input", "use_attn_in")


def _has_hooks(point: HookPoint) -> bool:
    return bool(point._forward_hooks or point._backward_hooks or point._forward_pre_hooks)


def internals_watched(module: torch.nn.Module) -> bool:
    """True when a hook sits on one of ``module``'s own hook points other than in/out/mask.

    Those hook points (scores, pattern, rotated q/k, ...) fire only on the eager
    recomputation, so a hook on any of them needs it.
    """
    return any(
        _has_hooks(child)
        for name, child in module._modules.items()
        if isinstance(child, HookPoint) and name not in _BOTH_PATHS
    )


class FastPathAttention(PositionEmbeddingsAttentionBridge):
    """TL's attention bridge with an SDPA fast path for layers whose internals nobody hooks."""

    hook_attn_mask: HookPoint
    force_eager: bool = False  # set by HookedVLM.eager_attention() for bit-exact comparisons

    def needs_eager(self) -> bool:
        """True when a hook or a TL flag needs the Python recomputation of this layer."""
        if self.force_eager:
            return True
        if any(bool(getattr(self.config, flag, False)) for flag in _EAGER_FLAGS):
            return True
        return internals_watched(self)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        # output_attentions is not a reason to recompute: TL asks for it whenever it caches,
        # and unwatched layers' weights are not read (SDPA returns None for them, as in HF).
        eager = self.needs_eager()
        watched_mask = _has_hooks(self.hook_attn_mask)
        if eager or watched_mask:
            # HF's SDPA mask is None (causal) or boolean; the hook point and TL's recomputation
            # take the additive float mask HF's eager attention would have been given.
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            mask = _additive_mask(kwargs.get("attention_mask"), hidden, kwargs,
                                  getattr(self.original_component, "layer_idx", 0))
            kwargs["attention_mask"] = self.hook_attn_mask(mask) if watched_mask else mask
        if eager:
            return super().forward(*args, **kwargs)
        return self._native_forward(*args, **kwargs)

    def _update_kv_cache(self, k: Tensor, v: Tensor, **kwargs: Any) -> tuple[Tensor, Tensor]:
        # TL reads the cache only as `past_key_values`; transformers >= 5.24 passes `cache=`.
        return super()._update_kv_cache(k, v, **tl_attention_kwargs(kwargs))

    def _native_forward(self, *args: Any, **kwargs: Any) -> Any:
        if "hidden_states" in kwargs:
            hidden = kwargs.pop("hidden_states")
        else:
            hidden, args = args[0], args[1:]
        hidden = self.hook_in(hidden)
        if kwargs.get("position_embeddings") is not None:
            kwargs["position_embeddings"] = self._apply_position_embedding_hooks(
                kwargs["position_embeddings"]
            )
        out, weights = self.original_component(hidden, *args, **kwargs)[:2]
        return self.hook_out(out), weights


def _additive_mask(
    mask: Tensor | None, hidden: Tensor, kwargs: dict[str, Any], layer: int = 0
) -> Float[Tensor, "batch one query key"]:
    """The layer's mask as an additive float tensor ``[batch, 1, query, key]``: a boolean mask
    (True = attend) converted, None (HF's SDPA mask for a plain causal batch) built causal over
    the keys cached at ``layer`` before this call and the new ones."""
    if mask is not None and mask.ndim == 4:
        if mask.dtype == torch.bool:
            zero = torch.zeros((), dtype=hidden.dtype, device=mask.device)
            return torch.where(mask, zero, torch.finfo(hidden.dtype).min)
        return mask
    batch, n_q = hidden.shape[:2]
    cache = get_cache(kwargs)
    n_past = cache.get_seq_length(layer) if cache is not None else 0
    causal = torch.ones(n_q, n_past + n_q, dtype=torch.bool, device=hidden.device)
    causal = causal.tril(diagonal=n_past)
    additive = torch.zeros(causal.shape, dtype=hidden.dtype, device=hidden.device)
    additive = additive.masked_fill(~causal, torch.finfo(hidden.dtype).min)
    return additive.expand(batch, 1, *causal.shape)


def sdpa_supported(config: Any) -> bool:
    """Whether HF's SDPA attention computes what its eager attention does for ``config``:
    not with logit softcapping (Gemma 2 / PaliGemma 2), which SDPA refuses, so such layers keep
    HF's eager kernel on the fast path."""
    return getattr(config, "attn_logit_softcapping", None) is None


def install_fast_attention(bridge: Any) -> int:
    """Turn every decoder ``PositionEmbeddingsAttentionBridge`` into :class:`FastPathAttention`.

    Returns the number of layers converted. Layers of other attention classes (native-attention
    adapters) are left alone. Re-scans the bridge's hook registry so ``hook_attn_mask`` is known.
    """
    converted, shared, blocks = 0, {}, list(getattr(bridge, "blocks", []))
    for block in blocks:
        attn = getattr(block, "attn", None)
        if type(attn) is not PositionEmbeddingsAttentionBridge:
            continue
        attn.__class__ = FastPathAttention
        attn.hook_attn_mask = HookPoint()
        hf_attn = attn.original_component
        shared[id(hf_attn.config)] = hf_attn.config
        if sdpa_supported(hf_attn.config):
            hf_attn.config = copy.copy(hf_attn.config)
            hf_attn.config._attn_implementation = "sdpa"
        converted += 1
    if converted and converted == len(blocks) and all(map(sdpa_supported, shared.values())):
        # Every layer takes HF's SDPA mask (None for a plain causal batch: the kernel's
        # is_causal, as in HF's own SDPA model) and makes it additive where it needs to.
        for config in shared.values():
            config._attn_implementation = "sdpa"
    if converted:
        bridge.clear_hook_registry()
        bridge._initialize_hook_registry()
    return converted
