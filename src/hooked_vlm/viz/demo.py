"""Figures of the demo page: the studies' numbers of several models side by side (drawing only).

Example:
    >>> gate_share_figure({"tiny-native": ([0, 1], [0.4, 0.6])}, {"tiny-native": "EOI"})
    >>> topk_share_figure({"tiny-llava": ([1, 2, 4], [0.1, 0.3, 0.8], [0.0, 0.0, 0.1])})
    >>> gate_vs_image_figure({"tiny-gate": (0.2, 0.9)}, "VQA accuracy", "mask")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from hooked_vlm.viz.style import COLORS, LAYOUT

_LAYOUT = {**LAYOUT, "height": 400, "margin": {**LAYOUT["margin"], "t": 80}}


def gate_share_figure(
    shares: Mapping[str, tuple[Sequence[int], Sequence[float]]], gates: Mapping[str, str]
) -> go.Figure:
    """Per model, the share of text->image attention that lands on its gate, per layer."""
    fig = go.Figure()
    for i, (model, (layers, share)) in enumerate(shares.items()):
        fig.add_trace(go.Scatter(x=list(layers), y=list(share), mode="lines+markers",
                                 name=f"{model} ({gates[model]})",
                                 line={"color": COLORS[i % len(COLORS)]}))
    fig.update_layout(title="Share of text→image attention on the gate token",
                      xaxis_title="layer", yaxis_title="share", yaxis_rangemode="tozero",
                      xaxis_dtick=1, **_LAYOUT)
    return fig


def knockout_contrast_figure(
    values: Mapping[str, Mapping[str, Mapping[str, float | None]]], titles: Mapping[str, str]
) -> go.Figure:
    """One panel per metric; per model, bars for clean, gate knocked out, image knocked out.

    ``values[model][metric]`` is ``{"clean": .., "gate": .., "image": ..}``.
    """
    metrics = [m for m in titles if any(m in v for v in values.values())]
    fig = make_subplots(1, len(metrics), subplot_titles=[titles[m] for m in metrics],
                        horizontal_spacing=0.08)
    conditions = {"clean": "no knockout", "gate": "text→gate knocked out",
                  "image": "text→image tokens knocked out"}
    for col, metric in enumerate(metrics, start=1):
        for i, (condition, label) in enumerate(conditions.items()):
            models = [m for m in values if metric in values[m]]
            fig.add_trace(go.Bar(x=models, y=[values[m][metric][condition] for m in models],
                                 name=label, marker_color=COLORS[i], showlegend=col == 1,
                                 legendgroup=condition), row=1, col=col)
    fig.update_layout(title="Knocking out the gate vs the image tokens (every layer)",
                      barmode="group", **_LAYOUT)
    fig.update_yaxes(rangemode="tozero")
    return fig


def topk_share_figure(
    curves: Mapping[str, tuple[Sequence[int], Sequence[float], Sequence[float]]],
) -> go.Figure:
    """Per model, the share of the all-heads ablation effect lost by ablating the top-k heads
    (solid) and k random heads (dotted). ``curves[model] = (ks, top_k_share, random_k_share)``.
    """
    fig = go.Figure()
    for i, (model, (ks, top, random)) in enumerate(curves.items()):
        color = COLORS[i % len(COLORS)]
        fig.add_trace(go.Scatter(x=list(ks), y=list(top), mode="lines+markers", name=f"{model}: "
                                 "top-k by attribution", line={"color": color}))
        fig.add_trace(go.Scatter(x=list(ks), y=list(random), mode="lines+markers",
                                 name=f"{model}: random k", line={"color": color, "dash": "dot"}))
    fig.add_hline(y=1.0, line={"color": "#999", "width": 1})
    ks = sorted({k for ks_, _, _ in curves.values() for k in ks_})
    fig.update_xaxes(tickvals=ks, ticktext=[str(k) for k in ks])
    fig.update_layout(title="Ablating the top-k attributed heads vs k random heads",
                      xaxis_title="k (heads ablated)", xaxis_type="log",
                      yaxis_title="share of the all-heads effect", **_LAYOUT)
    return fig


def gate_vs_image_figure(
    points: Mapping[str, tuple[float | None, float | None]], metric: str, mode: str
) -> go.Figure:
    """The Narrow Gate paper's Fig. 1 (right): per model, the performance left with text->gate
    edges cut (x) and with text->image-token edges cut (y), each over the clean performance.

    A model with a narrow gate sits low on x and high on y (cutting the gate costs what
    cutting the image costs, cutting the rest of the image costs little); a model that reads
    the image tokens sits near x = 1, y low. ``points[model] = (gate, image)``.

    Example:
        >>> gate_vs_image_figure({"tiny-gate": (0.2, 0.9), "tiny-llava": (1.0, 0.3)},
        ...                      "VQA accuracy", "mask")
    """
    fig = go.Figure()
    for i, (model, (gate, image)) in enumerate(points.items()):
        if gate is None or image is None:
            continue
        fig.add_trace(go.Scatter(x=[gate], y=[image], mode="markers+text", text=[model],
                                 textposition="top center", name=model,
                                 marker={"size": 12, "color": COLORS[i % len(COLORS)]}))
    fig.add_shape(type="line", x0=0, y0=0, x1=1.1, y1=1.1, line={"color": "#bbb", "dash": "dot"})
    fig.update_layout(
        title=f"{metric} left after the cut, relative to clean (mode {mode!r}, every layer)",
        xaxis_title="text→gate cut", yaxis_title="text→image tokens cut (gate kept)",
        xaxis_range=[-0.05, 1.2], yaxis_range=[-0.05, 1.2], showlegend=len(points) > 3,
        **_LAYOUT)
    return fig
