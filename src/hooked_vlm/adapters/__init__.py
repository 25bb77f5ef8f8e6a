"""TransformerLens adapters hooked-vlm adds or adjusts.

Importing this package registers each adapter with TL's ``ArchitectureAdapterFactory``:
classes TL lacks under their Hugging Face class name (Chameleon, Janus, Qwen2-VL, InternVL),
and TL's LLaVA-family adapters with editable vision towers under ``hooked_vlm.*`` names, so
TL's own registrations stay untouched. :attr:`hooked_vlm.architectures.Architecture.tl_adapter`
says which key each HF model uses.
"""

from transformer_lens.factories.architecture_adapter_factory import ArchitectureAdapterFactory

from hooked_vlm.adapters.chameleon import ChameleonArchitectureAdapter
from hooked_vlm.adapters.internvl import InternVLArchitectureAdapter
from hooked_vlm.adapters.janus import JanusArchitectureAdapter
from hooked_vlm.adapters.llava_family import (
    Idefics3Adapter,
    LlavaAdapter,
    LlavaNextAdapter,
    LlavaOnevisionAdapter,
    PixtralAdapter,
)
from hooked_vlm.adapters.qwen2_vl import Qwen2VLArchitectureAdapter
from hooked_vlm.adapters.vision import PatternEditError

ADAPTERS = {
    "ChameleonForConditionalGeneration": ChameleonArchitectureAdapter,
    "JanusForConditionalGeneration": JanusArchitectureAdapter,
    "Qwen2VLForConditionalGeneration": Qwen2VLArchitectureAdapter,
    "InternVLForConditionalGeneration": InternVLArchitectureAdapter,
    "hooked_vlm.Llava": LlavaAdapter,
    "hooked_vlm.LlavaNext": LlavaNextAdapter,
    "hooked_vlm.LlavaOnevision": LlavaOnevisionAdapter,
    "hooked_vlm.Idefics3": Idefics3Adapter,
    "hooked_vlm.Pixtral": PixtralAdapter,
}


def register_adapters() -> None:
    """Register hooked-vlm's adapters with TransformerLens (idempotent)."""
    for name, adapter in ADAPTERS.items():
        ArchitectureAdapterFactory.register_adapter(name, adapter)


register_adapters()

__all__ = [
    "ADAPTERS",
    "ChameleonArchitectureAdapter",
    "InternVLArchitectureAdapter",
    "JanusArchitectureAdapter",
    "PatternEditError",
    "Qwen2VLArchitectureAdapter",
    "register_adapters",
]
