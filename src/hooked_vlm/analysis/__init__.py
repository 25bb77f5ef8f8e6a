"""Pure tensor math over activations and layouts: no model is imported here."""

from hooked_vlm.analysis.attention_flow import cross_modal_attention

__all__ = ["cross_modal_attention"]
