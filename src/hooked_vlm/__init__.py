"""hooked-vlm: TransformerLens-style hooks, token layouts and interventions for VLMs.

Example:
    >>> from hooked_vlm import HookedVLM
    >>> model = HookedVLM.from_pretrained("chameleon-7b", device="cuda")
    >>> inputs = model.prepare(images, task="caption")
    >>> logits, cache = model.run_with_cache(inputs, names_filter=lambda n: "resid_post" in n)

Names are imported on first use (PEP 562), so ``import hooked_vlm`` and the command line's
``--help`` do not pay for torch and TransformerLens until something needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> module that defines it
_EXPORTS = {
    "ARCHITECTURES": "hooked_vlm.families",
    "UnsupportedArchitectureError": "hooked_vlm.families",
    "get_architecture": "hooked_vlm.families",
    "PatternEditError": "hooked_vlm.adapters.vision",
    "UnknownHookError": "hooked_vlm.hook_names",
    "VLMInputs": "hooked_vlm.inputs",
    "explore": "hooked_vlm.explorer",
    "LayoutError": "hooked_vlm.layout",
    "TokenLayout": "hooked_vlm.layout",
    "HookedVLM": "hooked_vlm.model",
    "VLMConfig": "hooked_vlm.model",
    "ModelConfig": "hooked_vlm.model_configs",
    "list_model_configs": "hooked_vlm.model_configs",
    "load_model_config": "hooked_vlm.model_configs",
    "HookOutputError": "hooked_vlm.validation",
    "ImageInputError": "hooked_vlm.validation",
    "ImageTokenMismatchError": "hooked_vlm.validation",
    "InputError": "hooked_vlm.validation",
}

__all__ = [
    "ARCHITECTURES",
    "HookOutputError",
    "HookedVLM",
    "ImageInputError",
    "ImageTokenMismatchError",
    "InputError",
    "LayoutError",
    "ModelConfig",
    "PatternEditError",
    "TokenLayout",
    "UnknownHookError",
    "UnsupportedArchitectureError",
    "VLMConfig",
    "VLMInputs",
    "explore",
    "get_architecture",
    "list_model_configs",
    "load_model_config",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hooked_vlm' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports lazily
    from hooked_vlm.adapters.vision import PatternEditError
    from hooked_vlm.explorer import explore
    from hooked_vlm.families import (
        ARCHITECTURES,
        UnsupportedArchitectureError,
        get_architecture,
    )
    from hooked_vlm.hook_names import UnknownHookError
    from hooked_vlm.inputs import VLMInputs
    from hooked_vlm.layout import LayoutError, TokenLayout
    from hooked_vlm.model import HookedVLM, VLMConfig
    from hooked_vlm.model_configs import ModelConfig, list_model_configs, load_model_config
    from hooked_vlm.validation import (
        HookOutputError,
        ImageInputError,
        ImageTokenMismatchError,
        InputError,
    )
