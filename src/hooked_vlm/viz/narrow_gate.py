"""Figures of the Narrow Gate study, one function per result: drawing only.

Each takes the plain numbers a stage wrote (lists per layer, per scale, ...) and returns a
plotly figure. They share one look (white template, layer on the x axis where there is one).

Example:
    >>> modality_gap_figure([0, 1], {"median": [.1, .2], "q25": [0, .1], "q75": [.2, .3]})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from hooked_vlm.viz.style import COLORS, LAYOUT, integer_ticks


def _band(fig: go.Figure, x: Sequence, low: Sequence, high: Sequence, color: str, name: str,
          **where: int) -> None:
    """A translucent band between ``low`` and ``high`` (hover shows nothing)."""
    fig.add_trace(go.Scatter(x=list(x) + list(x)[::-1], y=list(high) + list(low)[::-1],
                             fill="toself", fillcolor=color, opacity=0.2, line={"width": 0},
                             mode="lines",
                             hoverinfo="skip", name=name, showlegend=True), **where)


def modality_gap_figure(
    layers: Sequence[int], cosine: Mapping[str, Sequence[float]],
    abs_cosine: Mapping[str, Sequence[float]] | None = None,
) -> go.Figure:
    """Median cosine between a text and an image token per layer, with its IQR as a band."""
    fig = go.Figure()
    series = [("cos", cosine, COLORS[0])]
    if abs_cosine is not None:
        series.append(("|cos|", abs_cosine, COLORS[1]))
    for name, values, color in series:
        _band(fig, layers, values["q25"], values["q75"], color, f"{name} IQR")
        fig.add_trace(go.Scatter(x=list(layers), y=values["median"], mode="lines+markers",
                                 line={"color": color}, name=f"median {name}"))
    fig.update_layout(title="Text-image cosine similarity per layer", xaxis_title="layer",
                      yaxis_title="cosine (text token, image token)", **LAYOUT)
    integer_ticks(fig, layers)
    return fig


def homogeneity_figure(
    layers: Sequence[int], scores: Mapping[str, Sequence[float | None]]
) -> go.Figure:
    """Modality homogeneity of density-peak clusters per layer, one line per preset."""
    fig = go.Figure()
    for i, (preset, values) in enumerate(scores.items()):
        fig.add_trace(go.Scatter(x=list(layers), y=list(values), mode="lines+markers",
                                 name=f"preset {preset}", line={"color": COLORS[i]}))
    fig.update_layout(title="Modality homogeneity of clusters per layer", xaxis_title="layer",
                      yaxis_title="homogeneity (1 = clusters never mix modalities)",
                      yaxis_range=[-0.03, 1.03], **LAYOUT)
    integer_ticks(fig, layers)
    return fig


def flow_stack_figure(
    layers: Sequence[int], categories: Mapping[str, Sequence[float]]
) -> go.Figure:
    """Stacked shares of text->image attention per layer (bars sum to 1)."""
    fig = go.Figure()
    for i, (name, values) in enumerate(categories.items()):
        fig.add_trace(go.Bar(x=list(layers), y=list(values), name=name,
                             marker_color=COLORS[i % len(COLORS)]))
    fig.update_layout(barmode="stack", title="Where text reads the image from, per layer",
                      xaxis_title="layer", yaxis_title="share of text→image attention",
                      yaxis_range=[0, 1.0001], **LAYOUT)
    integer_ticks(fig, layers)
    return fig


def flow_keys_figure(
    layers: Sequence[int], shares: Sequence[Sequence[float]], key_names: Sequence[str]
) -> go.Figure:
    """Heatmap of the share of text->image attention on every image-side key, per layer."""
    fig = go.Figure(go.Heatmap(
        z=[list(row) for row in shares], x=list(key_names), y=list(layers),
        colorscale="Viridis", colorbar={"title": "share"},
        hovertemplate="layer %{y}, %{x}: %{z:.3f}<extra></extra>"))
    fig.update_layout(title="Share of text→image attention on each image-side position",
                      xaxis_title="image-side position (in sequence order)", yaxis_title="layer",
                      **{**LAYOUT, "height": 300 + 8 * len(layers)})
    fig.update_yaxes(dtick=max(1, round(len(layers) / 12)))
    return fig


def overlap_figure(
    layers: Sequence[int], chi: Mapping[str, Sequence[float]], chance: float | None = None
) -> go.Figure:
    """Neighbourhood overlap with the class labels per layer, one line per token."""
    fig = go.Figure()
    for i, (token, values) in enumerate(chi.items()):
        fig.add_trace(go.Scatter(x=list(layers), y=list(values), mode="lines+markers",
                                 name=token, line={"color": COLORS[i]}))
    if chance is not None:
        fig.add_trace(go.Scatter(x=[layers[0], layers[-1]], y=[chance, chance], mode="lines",
                                 name="chance", line={"color": "gray", "dash": "dash"}))
    fig.update_layout(title="Class information per token and layer (label overlap χ)",
                      xaxis_title="layer", yaxis_title="χ (share of neighbours with its label)",
                      yaxis_range=[-0.03, 1.03], **LAYOUT)
    integer_ticks(fig, layers)
    return fig


def knockout_figure(
    conditions: Sequence[str], metrics: Mapping[str, Sequence[float | None]],
    errors: Mapping[str, Sequence[float | None]] | None = None,
) -> go.Figure:
    """One panel per metric: its value under each knockout condition."""
    names = list(metrics)
    fig = make_subplots(1, len(names), subplot_titles=names, horizontal_spacing=0.08)
    for i, name in enumerate(names, start=1):
        fig.add_trace(go.Bar(x=list(conditions), y=list(metrics[name]), name=name,
                             marker_color=COLORS[i - 1], showlegend=False), row=1, col=i)
        spread = [(c, v, e) for c, v, e in zip(conditions, metrics[name],
                                               (errors or {}).get(name) or [None] * len(conditions),
                                               strict=True) if e is not None and v is not None]
        if spread:  # whiskers only where there is a spread (the random draws)
            fig.add_trace(go.Scatter(
                x=[c for c, _, _ in spread], y=[v for _, v, _ in spread], mode="markers",
                marker={"opacity": 0}, error_y={"type": "data", "array": [e for *_, e in spread],
                                                "color": "#333"},
                showlegend=False, hoverinfo="skip"), row=1, col=i)
    fig.update_layout(title="Effect of knocking out text→image attention",
                      **{**LAYOUT, "height": 440, "margin": {**LAYOUT["margin"], "t": 90}})
    fig.update_xaxes(tickangle=-40)
    fig.update_yaxes(rangemode="tozero")
    return fig


def progressive_figure(
    curves: Mapping[str, Mapping[str, Sequence]], none: Mapping[str, float | None],
    metric: str = "chi",
) -> go.Figure:
    """``metric`` against the number ``w`` of last layers knocked out, one line per cut."""
    fig = go.Figure()
    keys = sorted({name.split("/")[-1] for name in curves})
    for name, curve in curves.items():
        mode, cut = name.split("/")[0], name.split("/")[-1]
        fig.add_trace(go.Scatter(
            x=[0, *curve["w"]], y=[none[metric], *curve[metric]], mode="lines+markers",
            name=name, line={"color": COLORS[keys.index(cut)],
                             "dash": "dot" if mode == "zero" else "solid"}))
    fig.update_layout(title=f"Knocking out only the last w layers ({metric})",
                      xaxis_title="w (last layers knocked out; 0 = none)", yaxis_title=metric,
                      **LAYOUT)
    integer_ticks(fig, [0, *[w for c in curves.values() for w in c["w"]]])
    return fig


def patching_figure(
    layers: Sequence[int], sweeps: Mapping[str, Mapping[str, Sequence[float]]]
) -> go.Figure:
    """Flip rate, logit difference and similarity to the source, per patched layer."""
    panels = [("flip_rate", "flip rate"), ("ld", "logit difference (target − source)"),
              ("similarity", "similarity to source Σ min(p, q)")]
    fig = make_subplots(1, 3, subplot_titles=[t for _, t in panels], horizontal_spacing=0.07)
    for i, (name, sweep) in enumerate(sweeps.items()):
        for col, (key, _) in enumerate(panels, start=1):
            fig.add_trace(go.Scatter(x=list(layers), y=list(sweep[key]), mode="lines+markers",
                                     name=name, legendgroup=name, showlegend=col == 1,
                                     line={"color": COLORS[i]}), row=1, col=col)
    fig.update_xaxes(title_text="layer", tick0=0, dtick=max(1, round(len(layers) / 8)))
    fig.update_yaxes(range=[-0.03, 1.03], row=1, col=1)
    fig.update_layout(title="Patching the gate from an image of another class",
                      **{**LAYOUT, "margin": {**LAYOUT["margin"], "t": 90}})
    return fig


def steering_figure(
    scales: Sequence[float], layers: Sequence[int],
    flip_toward: Sequence[Sequence[float | None]], target_wins: Sequence[Sequence[float]],
) -> go.Figure:
    """Flip rate toward the target class (solid) and share where it wins (dotted) vs scale."""
    fig = go.Figure()
    for i, layer in enumerate(layers):
        color = COLORS[i % len(COLORS)]
        fig.add_trace(go.Scatter(x=list(scales), y=list(flip_toward[i]), mode="lines+markers",
                                 name=f"layer {layer}: flips toward target",
                                 line={"color": color}))
        fig.add_trace(go.Scatter(x=list(scales), y=list(target_wins[i]), mode="lines",
                                 name=f"layer {layer}: target beats own class",
                                 line={"color": color, "dash": "dot"}))
    fig.update_layout(title="Steering the gate with class-mean differences",
                      xaxis_title="scale", yaxis_title="fraction of examples",
                      yaxis_range=[-0.03, 1.03], **LAYOUT)
    return fig
