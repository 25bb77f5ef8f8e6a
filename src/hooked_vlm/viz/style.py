"""The look the study figures share: colours, a white layout, whole-number ticks.

Example:
    >>> fig.update_layout(title="...", **LAYOUT); integer_ticks(fig, layers)
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.colors import qualitative

COLORS = qualitative.D3
LAYOUT = {"template": "plotly_white", "height": 380,
          "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
          "legend": {"orientation": "h", "y": -0.2}}


def integer_ticks(fig: go.Figure, values: Sequence[float]) -> None:
    """Whole-number ticks on the x axis (layers, windows): never "layer 1.5"."""
    span = max(values) - min(values) if len(values) else 0
    fig.update_xaxes(tick0=0, dtick=max(1, round(span / 12)))
