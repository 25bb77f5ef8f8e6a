"""Plotly figures of study results: drawing only, no computation."""

from hooked_vlm.viz.flow import flow_figure

__all__ = ["flow_figure"]
