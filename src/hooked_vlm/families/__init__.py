"""Every supported model family, one module each, in one registry.

A family module (``hooked_vlm/families/<family>.py``) holds everything hooked-vlm knows about
one Hugging Face VLM class: whether it is native (images as codes in the decoder's vocabulary)
or encoder-based, its special tokens, how its image span and patch grid are laid out, what the
forward needs on top of HF's inputs, its vision-side hooks, its TransformerLens adapter
(TransformerLens' own where it has one, extended where patterns must be editable) and a tiny
random instance for tests. It ends in ``FAMILY``, an :class:`Architecture`; this package
collects them in :data:`ARCHITECTURES` (by HF class) and :data:`TINY_BUILDERS` (by tiny name),
and registers the adapters with TransformerLens on import.

To add a family: write ``families/<family>.py`` in the shape of its neighbours, add it to
``_MODULES`` below, add a ``model_configs/<name>.yaml`` with the real HF id and prompts, and
run ``python scripts/models_table.py`` to update the README.

Example:
    >>> get_architecture("Qwen2VLForConditionalGeneration").family
    'Qwen2-VL'
    >>> tiny = build_tiny("qwen2_vl")
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from transformer_lens.factories.architecture_adapter_factory import ArchitectureAdapterFactory

from hooked_vlm.families import (
    chameleon,
    emu3,
    gemma3,
    idefics3,
    internvl,
    janus,
    llava,
    llava_next,
    llava_onevision,
    mistral3,
    molmo2,
    paligemma,
    qwen2_5_vl,
    qwen2_vl,
    qwen3_vl,
    smolvlm,
)
from hooked_vlm.families._tiny import TinyModel
from hooked_vlm.families.base import (
    TOKEN_ROLES,
    Architecture,
    UnsupportedArchitectureError,
)

_MODULES = (
    llava, mistral3, llava_next, llava_onevision, janus, qwen2_vl, internvl, idefics3,
    chameleon, emu3, qwen2_5_vl, qwen3_vl, gemma3, paligemma, smolvlm, molmo2,
)

#: Every supported HF class -> its :class:`Architecture`.
ARCHITECTURES: dict[str, Architecture] = {m.FAMILY.hf_class: m.FAMILY for m in _MODULES}

#: Tiny random instance name -> builder ``(seed=0, n_layers=2) -> TinyModel``.
TINY_BUILDERS: dict[str, Callable[..., TinyModel]] = {
    name: builder for m in _MODULES for name, builder in m.FAMILY.tiny.items()
}


def get_architecture(hf_class: str) -> Architecture:
    """Look up a supported HF class; a clear error lists the supported ones.

    Example:
        >>> get_architecture("LlavaForConditionalGeneration").native
        False
    """
    if hf_class in ARCHITECTURES:
        return ARCHITECTURES[hf_class]
    close = difflib.get_close_matches(hf_class, ARCHITECTURES, n=1)
    hint = f" Did you mean {close[0]}?" if close else ""
    raise UnsupportedArchitectureError(
        f"{hf_class} is not supported by hooked-vlm.{hint} Supported architectures: "
        f"{', '.join(sorted(ARCHITECTURES))}. See README 'Supported models' for the checkpoints "
        "of each, and hooked_vlm/families/ to add one."
    )


def build_tiny(name: str, seed: int = 0, **kwargs: Any) -> TinyModel:
    """Build the tiny random model ``name`` (one of :data:`TINY_BUILDERS`).

    Example:
        >>> build_tiny("chameleon", n_layers=3).model.config.num_hidden_layers
        3
    """
    if name not in TINY_BUILDERS:
        close = difflib.get_close_matches(name, TINY_BUILDERS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"no tiny model {name!r}.{hint} Available: {sorted(TINY_BUILDERS)}")
    return TINY_BUILDERS[name](seed=seed, **kwargs)


def register_adapters() -> None:
    """Register every family's TransformerLens adapters (idempotent)."""
    for module in _MODULES:
        for key, adapter in module.FAMILY.adapters.items():
            ArchitectureAdapterFactory.register_adapter(key, adapter)


register_adapters()

__all__ = [
    "ARCHITECTURES",
    "TINY_BUILDERS",
    "TOKEN_ROLES",
    "Architecture",
    "TinyModel",
    "UnsupportedArchitectureError",
    "build_tiny",
    "get_architecture",
    "register_adapters",
]
