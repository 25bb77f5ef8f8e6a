"""Figure: per-layer share of text->image attention landing on EOI and on the last image token."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go


def flow_figure(
    rows: Sequence[dict[str, float]], title: str, series: Sequence[str] = ("eoi", "last_image")
) -> go.Figure:
    """Lines of ``rows[l][series]`` against layer ``l``.

    Example:
        >>> rows = [{"layer": 0, "eoi": 0.4, "last_image": 0.1}]
        >>> flow_figure(rows, "chameleon").write_html("flow.html")
    """
    fig = go.Figure()
    for name in series:
        fig.add_trace(go.Scatter(x=[r["layer"] for r in rows], y=[r[name] for r in rows],
                                 mode="lines+markers", name=f"{name} share"))
    fig.update_layout(title=title, xaxis_title="layer", yaxis_title="share of text→image attention",
                      yaxis_range=[0, 1], template="plotly_white")
    return fig
