"""Pure tensor math over activations and layouts: no model is imported here."""

from hooked_vlm.analysis.attention_flow import cross_modal_attention
from hooked_vlm.analysis.image_map import scatter_to_grid, to_picture, view_box

__all__ = ["cross_modal_attention", "scatter_to_grid", "to_picture", "view_box"]
