"""hooked-vlm: TransformerLens-style hooks, token layouts and interventions for VLMs.

Example:
    >>> from hooked_vlm import HookedVLM
    >>> model = HookedVLM.from_pretrained("chameleon-7b", device="cuda")
    >>> inputs = model.prepare(images, task="caption")
    >>> logits, cache = model.run_with_cache(inputs, names_filter=lambda n: "resid_post" in n)
"""

from hooked_vlm._guards import disable_runtime_installs

disable_runtime_installs()

from hooked_vlm.adapters.vision import PatternEditError  # noqa: E402
from hooked_vlm.architectures import (  # noqa: E402
    ARCHITECTURES,
    UnsupportedArchitectureError,
    get_architecture,
)
from hooked_vlm.hook_names import UnknownHookError  # noqa: E402
from hooked_vlm.inputs import VLMInputs  # noqa: E402
from hooked_vlm.layout import LayoutError, TokenLayout  # noqa: E402
from hooked_vlm.model import HookedVLM, ImageTokenMismatchError, VLMConfig  # noqa: E402
from hooked_vlm.model_configs import ModelConfig, list_model_configs, load_model_config  # noqa: E402

__all__ = [
    "ARCHITECTURES",
    "HookedVLM",
    "ImageTokenMismatchError",
    "LayoutError",
    "ModelConfig",
    "PatternEditError",
    "TokenLayout",
    "UnknownHookError",
    "UnsupportedArchitectureError",
    "VLMConfig",
    "VLMInputs",
    "get_architecture",
    "list_model_configs",
    "load_model_config",
]
__version__ = "0.1.0"
