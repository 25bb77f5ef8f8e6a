"""Turning an HF model, a local directory, a hub id or a model-config name into a bridge.

Network access happens only when the user names a hub id that is not cached: local
directories and model-config names that resolve to a local directory load with
``local_files_only=True``.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from transformer_lens.model_bridge import TransformerBridge
from transformer_lens.model_bridge.sources import build_bridge_from_module
from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_config_from_hf

from hooked_vlm._guards import disable_runtime_installs
from hooked_vlm.adapters.vision import guard_native_attention
from hooked_vlm.families import (  # importing registers every family's TL adapter
    TOKEN_ROLES,
    Architecture,
    UnsupportedArchitectureError,
    get_architecture,
)
from hooked_vlm.model_configs import ModelConfig, list_model_configs, load_model_config

# Every bridge hooked-vlm builds comes through this module: TL's pip-calling torchvision
# installer is disarmed before any can be built.
disable_runtime_installs()

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
    "float64": torch.float64, "fp64": torch.float64,
}


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``"bf16"``/``"bfloat16"``/``torch.bfloat16`` -> ``torch.bfloat16``; ``None`` stays."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


@dataclass(frozen=True)
class Source:
    """Where weights come from, resolved from a user's ``name_or_path``."""

    location: str
    local: bool
    model_config: ModelConfig | None


class ModelSourceError(ValueError):
    """A model name or path that is neither a model config, a local directory nor a hub id."""


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_source(
    name_or_path: str | Path, model_config: str | ModelConfig | None = None
) -> Source:
    """A model-config name, a local directory, or (otherwise) a hub id ``owner/name``.

    ``model_config`` names the config to use with a local directory (a local copy of a known
    checkpoint); a hub id that is some config's ``hf_id`` gets that config automatically.
    Anything else raises :class:`ModelSourceError` before the network is touched: a path that
    does not exist, a file instead of a checkpoint directory, or a name that is no model
    config (with the closest config names).

    Example:
        >>> resolve_source("chameleon-7").location
        Traceback (most recent call last):
        ModelSourceError: 'chameleon-7' is not a model-config name ... Did you mean 'chameleon-7b'?
    """
    name = str(name_or_path)
    if isinstance(model_config, str):
        model_config = load_model_config(model_config)
    path = Path(name).expanduser()
    if path.is_dir():
        return Source(str(path), True, model_config)
    configs = list_model_configs()
    if name in configs:
        cfg = load_model_config(name)
        return Source(cfg.location, cfg.embedded or Path(cfg.location).is_dir(), cfg)
    if path.is_file():
        raise ModelSourceError(
            f"{name!r} is a file; give the directory that holds the checkpoint (its "
            f"config.json and weights, as save_pretrained writes them): {str(path.parent)!r}?"
        )
    looks_like_path = name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1
    if looks_like_path:
        raise ModelSourceError(
            f"no such directory: {name!r} (resolved to {str(path.resolve())!r}). Give a "
            "save_pretrained checkpoint directory, a model-config name or a hub id (owner/name)."
        )
    if not _HUB_ID.match(name):
        close = difflib.get_close_matches(name, configs, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ModelSourceError(
            f"{name!r} is not a model-config name, an existing directory or a hub id "
            f"(owner/name).{hint} Model configs: {', '.join(configs)}."
        )
    if model_config is None:
        known = (load_model_config(n) for n in configs)
        model_config = next((c for c in known if c.hf_id == name), None)
    return Source(name, False, model_config)


def architecture_of(model: torch.nn.Module) -> Architecture:
    """The :class:`Architecture` of an HF model instance."""
    return get_architecture(type(model).__name__)


def load_hf_model(
    source: Source, dtype: torch.dtype | None, device: str | torch.device | None, **hf_kwargs: Any
) -> tuple[torch.nn.Module, Architecture]:
    """Load the HF model class named in the checkpoint's config (eager attention)."""
    local_only = hf_kwargs.pop("local_files_only", source.local)
    config = transformers.AutoConfig.from_pretrained(source.location, local_files_only=local_only)
    names = list(getattr(config, "architectures", None) or [])
    if not names:
        raise UnsupportedArchitectureError(
            f"{source.location}: its config.json names no `architectures`, so the model class "
            "is unknown. Save the model with save_pretrained, or load it with transformers and "
            "use HookedVLM.from_hf(model)."
        )
    arch = get_architecture(names[0])
    cls = getattr(transformers, arch.hf_class)
    hf_model = cls.from_pretrained(
        source.location, dtype=dtype or "auto", attn_implementation="eager",
        local_files_only=local_only, **hf_kwargs,
    )
    if device is not None and "device_map" not in hf_kwargs:
        hf_model.to(device)
    return hf_model.eval(), arch


_LOAD_ERRORS = (OSError, ValueError, TypeError, KeyError, ImportError, AttributeError)


def load_processor(source: Source) -> Any | None:
    """The checkpoint's processor, or ``None`` when it ships none (tiny test checkpoints) or
    needs a library that is not installed (torchvision for Pixtral's image processor).

    A processor that fails only for its video processor (HF's need torchvision, which
    hooked-vlm never installs: Qwen-VL, SmolVLM) is loaded without it (:func:`image_only`):
    images and text work, videos need their inputs built elsewhere.
    """
    try:
        return transformers.AutoProcessor.from_pretrained(
            source.location, local_files_only=source.local
        )
    except _LOAD_ERRORS:
        pass
    try:
        config = transformers.AutoConfig.from_pretrained(
            source.location, local_files_only=source.local
        )
        from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

        cls = getattr(transformers, PROCESSOR_MAPPING_NAMES.get(config.model_type, ""), None)
        if cls is None or not _takes_video_last(cls):
            return None
        return image_only(cls).from_pretrained(source.location, local_files_only=source.local)
    except _LOAD_ERRORS:
        return None


def _takes_video_last(cls: type) -> bool:
    params = list(inspect.signature(cls.__init__).parameters)[1:4]
    return params == ["image_processor", "tokenizer", "video_processor"]


def image_only(cls: type) -> type:
    """Processor class ``cls`` (``image_processor, tokenizer, video_processor, ...``) without
    its video processor: loaded, built and saved from the image processor and tokenizer alone.
    HF's video processors need torchvision, which hooked-vlm never installs.

    Example:
        >>> processor = image_only(Qwen2_5_VLProcessor)(image_processor=ip, tokenizer=tok)
    """
    if not _takes_video_last(cls):
        raise TypeError(f"{cls.__name__} does not take (image_processor, tokenizer, "
                        "video_processor, ...): image_only cannot drop its video processor")

    class ImageOnly(cls):  # type: ignore[misc, valid-type]
        @classmethod
        def get_attributes(cls_) -> list[str]:  # noqa: N805  (a classmethod of the subclass)
            return [a for a in super().get_attributes() if a != "video_processor"]

        def __init__(self, image_processor: Any = None, tokenizer: Any = None,
                     video_processor: Any = None, **kwargs: Any) -> None:
            if video_processor is not None:
                raise ValueError(f"{cls.__name__} was loaded without its video processor")
            super().__init__(image_processor, tokenizer, None, **kwargs)

    ImageOnly.__name__ = ImageOnly.__qualname__ = cls.__name__
    return ImageOnly


def build_bridge(hf_model: torch.nn.Module, arch: Architecture, name: str) -> TransformerBridge:
    """Wrap ``hf_model`` (in place) in TransformerLens' bridge with hooked-vlm's adapters.

    The adapter is ``arch.adapter_name(config)`` (a LLaVA checkpoint with a Pixtral tower gets
    the Pixtral adapter). Any attention bridge left that only observes its pattern is guarded:
    a hook editing it raises :class:`~hooked_vlm.adapters.PatternEditError`.
    """
    dtype = next(hf_model.parameters()).dtype
    adapter = arch.adapter_name(hf_model.config)
    bridge_config = build_bridge_config_from_hf(hf_model.config, adapter, name, dtype)
    for attr in arch.config_passthrough:
        setattr(bridge_config, attr, getattr(hf_model.config, attr, None))
    bridge = build_bridge_from_module(hf_model, adapter, tl_config=bridge_config)
    guard_native_attention(bridge)
    return bridge


def attach_token_ids(
    config: Any, processor: Any | None, model_config: ModelConfig | None
) -> dict[str, int]:
    """Store special-token ids the HF config lacks as ``<role>_token_id`` on ``config``.

    Pixtral's ``[IMG_BREAK]`` / ``[IMG_END]``, Janus' and InternVL's BOI/EOI live only in the
    tokenizer: their strings come from the model config (``special_tokens``: ``boi``, ``eoi``,
    ``eol`` as the row break, ``eof``), their ids from the processor's tokenizer. Roles the
    config already has, and strings the tokenizer does not know, are left alone. Returns the
    ids set.

    Example:
        >>> attach_token_ids(model.config, processor, load_model_config("pixtral-12b"))
        {'row_break': 12, 'eoi': 13}
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    if model_config is None or not hasattr(tokenizer, "convert_tokens_to_ids"):
        return {}
    strings = {
        ("row_break" if k == "eol" else k): v for k, v in model_config.special_tokens.items()
    }
    unknown = getattr(tokenizer, "unk_token_id", None)
    arch = get_architecture(model_config.architecture)
    found = arch.special_tokens(config)
    attached = {}
    for role in TOKEN_ROLES:
        if role not in strings or getattr(found, role) is not None:
            continue
        token_id = tokenizer.convert_tokens_to_ids(strings[role])
        if isinstance(token_id, int) and token_id != unknown:
            setattr(config, f"{role}_token_id", token_id)
            attached[role] = token_id
    inner = strings.get("image_inner")
    if inner and not found.image_inner:
        ids = [tokenizer.convert_tokens_to_ids(t) for t in inner]
        config.image_inner_token_ids = [i for i in ids if isinstance(i, int) and i != unknown]
    return attached


def set_token_ids(config: Any, ids: Mapping[str, int]) -> None:
    """Store user-named special-token ids (``{"eoi": 6}``) as ``<role>_token_id`` on ``config``.

    Example:
        >>> set_token_ids(model.config, {"boi": 5, "eoi": 6})
    """
    for role, token_id in ids.items():
        if role not in TOKEN_ROLES:
            raise ValueError(
                f"unknown special-token role {role!r}; roles: {', '.join(TOKEN_ROLES)} "
                "(row_break is the end-of-row token, e.g. Pixtral's [IMG_BREAK])."
            )
        if isinstance(token_id, bool) or not isinstance(token_id, int) or token_id < 0:
            raise ValueError(
                f"special token {role!r} must be a token id (int >= 0), got {token_id!r}"
            )
        setattr(config, f"{role}_token_id", token_id)
