"""Plotly figures of study results: drawing only, no computation."""

from hooked_vlm.viz.flow import flow_figure
from hooked_vlm.viz.image_overlay import attention_on_image, attention_on_image_grid

__all__ = ["attention_on_image", "attention_on_image_grid", "flow_figure"]
