"""Where hooked-vlm meets upstream names that move: the one place that knows them.

transformers 5.24 renamed the KV-cache keyword of every model, decoder layer and attention
module from ``past_key_values`` to ``cache`` (and the output field likewise). The old names keep
working through deprecation shims until transformers 5.40, where they are removed. Nothing else
in hooked-vlm spells either name: code asks this module.

What TransformerLens 4.3 still relies on (and so breaks with transformers 5.40, unless TL changes
first):

- ``AttentionBridge._update_kv_cache`` reads only ``past_key_values`` / ``layer_past`` from the
  kwargs the decoder layer hands its attention. From 5.24 the layer passes ``cache=``, so TL's
  recomputed attention (every hooked pattern/score, ``eager_attention()``) silently skipped the
  cache: decode steps and prefix-reuse suffixes attended to themselves only.
  :func:`tl_attention_kwargs` gives TL the cache under the name it reads
  (:class:`hooked_vlm.fast_attention.FastPathAttention` calls it for every decoder layer).
- ``TransformerBridge.forward(past_key_values=...)`` forwards that name to HF, and
  ``return_type="logits_and_cache"`` reads ``output.past_key_values`` (a deprecated alias of
  ``output.cache`` since 5.24). HookedVLM avoids both: it creates the cache itself
  (:func:`new_cache`), passes it under :data:`CACHE_KWARG`, and keeps its own reference.

Example:
    >>> kwargs = {CACHE_KWARG: new_cache(model.hf_model)}
    >>> get_cache(kwargs).get_seq_length()
    0
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from transformers import DynamicCache
from transformers.models.llama.modeling_llama import LlamaAttention

#: Every keyword under which some transformers release or TL passes a KV cache.
_CACHE_NAMES = ("cache", "past_key_values", "layer_past")


def _cache_kwarg() -> str:
    """The keyword transformers' attention modules take the cache under, read from a signature
    (not from a version number, so a backport or a release candidate is judged by what it does).
    """
    params = inspect.signature(LlamaAttention.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


#: The keyword this transformers release takes a KV cache under ("cache" from 5.24 on).
CACHE_KWARG = _cache_kwarg()


def get_cache(kwargs: Mapping[str, Any]) -> Any | None:
    """The KV cache in ``kwargs`` under any of its names, or ``None``.

    Example:
        >>> get_cache({"past_key_values": past}) is past
        True
    """
    for name in _CACHE_NAMES:
        value = kwargs.get(name)
        if value is not None:
            return value
    return None


def normalise_cache_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with a cache given under any name moved to :data:`CACHE_KWARG`.

    Raises ``ValueError`` when two names carry two different caches.

    Example:
        >>> normalise_cache_kwargs({"past_key_values": past})   # {"cache": past} on 5.24
    """
    given = {name: kwargs[name] for name in _CACHE_NAMES if kwargs.get(name) is not None}
    if len({id(v) for v in given.values()}) > 1:
        raise ValueError(
            f"two different KV caches were given ({', '.join(given)}); pass one, as "
            f"{CACHE_KWARG}= (or past_key_values=)."
        )
    out = without_cache(kwargs)
    if given:
        out[CACHE_KWARG] = next(iter(given.values()))
    return out


def without_cache(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` minus any KV cache (a whole-prompt computation that must not see one)."""
    return {k: v for k, v in kwargs.items() if k not in _CACHE_NAMES}


def tl_attention_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Attention kwargs as TransformerLens' ``_update_kv_cache`` reads them
    (``past_key_values``), whatever name the decoder layer used."""
    cache = get_cache(kwargs)
    if cache is None or kwargs.get("past_key_values") is cache:
        return kwargs
    return {**kwargs, "past_key_values": cache}


def new_cache(hf_model: Any) -> DynamicCache:
    """An empty KV cache for ``hf_model``'s decoder, filled in place by each forward.

    Sliding-window layers record their past, so that :func:`crop_cache` can roll them back
    (a reused prefix); they still attend within their window.

    Example:
        >>> past = new_cache(model.hf_model)
    """
    config = hf_model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    cache = DynamicCache(config=text)
    for layer in cache.layers:  # sliding-window layers (Gemma 2/3) keep what a crop needs
        if hasattr(layer, "activate_past_recording"):
            layer.activate_past_recording()
    return cache


def crop_cache(cache: Any, length: int) -> None:
    """Truncate every layer of ``cache`` to its first ``length`` positions, each layer from its
    own length: a forward that failed partway leaves layers of different lengths, and the
    cache-level ``crop`` reads layer 0's length for all of them.

    Example:
        >>> crop_cache(past, prefix_length)
    """
    for layer in cache.layers:
        extra = layer.get_seq_length() - length
        if extra > 0:
            layer.crop(-extra)


def recorded_hidden_states() -> list[Any] | None:
    """The ``hidden_states`` list that transformers is recording in the forward in flight
    (``output_hidden_states``), or ``None``.

    transformers records a layer's hidden state with a forward hook on the HF layer module,
    which fires *before* TransformerLens' ``hook_resid_post`` of the bridge around it, so an
    edit there would not reach a model that reads a recorded state (LLaVA's projector reads
    ``hidden_states[vision_feature_layer]`` of its vision tower).
    :func:`hooked_vlm.adapters.vision.follow_edits_in_recorded_states` uses this to record the
    edited state instead. Internal transformers API (``utils.output_capturing``, 5.x).
    """
    from transformers.utils.output_capturing import _active_collector

    collected = _active_collector.get()
    if not collected or "hidden_states" not in collected:
        return None
    return collected["hidden_states"]
