"""LLaVA-family adapters (LLaVA, LLaVA-NeXT, LLaVA-OneVision, Idefics3, Mistral3 / Pixtral).

TransformerLens ships these adapters; hooked-vlm subclasses them only to change the vision
tower: CLIP / SigLIP attention is recomputed by
:class:`~hooked_vlm.adapters.vision.EditableVisionAttentionBridge` (TL's own bridge discards
pattern edits), and the Pixtral tower, which TL delegates opaquely, gets per-layer hooks and
editable 2D-RoPE attention. A LLaVA checkpoint with a Pixtral tower
(mistral-community/pixtral-12b) uses the Mistral3 layout adapter, whose module paths match.

Example:
    >>> build_bridge_from_module(model, "hooked_vlm.Pixtral", hf_config=model.config)
"""

from __future__ import annotations

from typing import Any

from transformer_lens.model_bridge.architecture_adapter import ArchitectureAdapter
from transformer_lens.model_bridge.supported_architectures.idefics3 import (
    Idefics3ArchitectureAdapter,
)
from transformer_lens.model_bridge.supported_architectures.llava import (
    LlavaArchitectureAdapter,
)
from transformer_lens.model_bridge.supported_architectures.llava_next import (
    LlavaNextArchitectureAdapter,
)
from transformer_lens.model_bridge.supported_architectures.llava_onevision import (
    LlavaOnevisionArchitectureAdapter,
)
from transformer_lens.model_bridge.supported_architectures.mistral3 import (
    Mistral3ArchitectureAdapter,
)

from hooked_vlm.adapters.vision import make_vision_attention_editable, pixtral_tower


def _editable_tower(base: type[ArchitectureAdapter]) -> type[ArchitectureAdapter]:
    """``base`` with its CLIP/SigLIP tower's attention made editable."""

    class Adapter(base):  # type: ignore[misc, valid-type]
        def __init__(self, cfg: Any) -> None:
            super().__init__(cfg)
            make_vision_attention_editable(self)

    Adapter.__name__ = Adapter.__qualname__ = f"Editable{base.__name__}"
    Adapter.__doc__ = f"{base.__name__} whose vision-tower attention patterns are editable."
    return Adapter


LlavaAdapter = _editable_tower(LlavaArchitectureAdapter)
LlavaNextAdapter = _editable_tower(LlavaNextArchitectureAdapter)
LlavaOnevisionAdapter = _editable_tower(LlavaOnevisionArchitectureAdapter)
Idefics3Adapter = _editable_tower(Idefics3ArchitectureAdapter)


class PixtralAdapter(Mistral3ArchitectureAdapter):
    """Mistral3 / LLaVA-with-Pixtral: Llava layout with a hooked, editable Pixtral tower."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.components["vision_encoder"] = pixtral_tower(self.cfg)
