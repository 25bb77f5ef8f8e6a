"""TransformerLens adapters for architectures TransformerLens 4.x does not ship.

Importing this package registers each adapter with TL's ``ArchitectureAdapterFactory``
under the Hugging Face class name, so ``build_bridge_from_module(model, name, ...)`` finds it.
"""

from transformer_lens.factories.architecture_adapter_factory import ArchitectureAdapterFactory

from hooked_vlm.adapters.chameleon import ChameleonArchitectureAdapter

_ADAPTERS = {
    "ChameleonForConditionalGeneration": ChameleonArchitectureAdapter,
}


def register_adapters() -> None:
    """Register hooked-vlm's adapters with TransformerLens (idempotent)."""
    for name, adapter in _ADAPTERS.items():
        ArchitectureAdapterFactory.register_adapter(name, adapter)


register_adapters()

__all__ = ["ChameleonArchitectureAdapter", "register_adapters"]
