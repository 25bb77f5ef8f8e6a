"""Figures of the head-attribution study, one function per result: drawing only.

Each takes the plain numbers a stage wrote and returns a plotly figure. Head scores are drawn
as layer x head heatmaps on a diverging scale centred at 0 (a head whose keeping raises the
target is red, one whose keeping lowers it blue).

Example:
    >>> head_heatmap(np.random.randn(4, 4), "pooled attribution").show()
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from hooked_vlm.viz.style import COLORS, LAYOUT, integer_ticks

DIVERGING = "RdBu_r"


def head_heatmaps(
    scores: Mapping[str, np.ndarray], title: str, value_name: str = "attribution",
    n_cols: int = 3,
) -> go.Figure:
    """One layer x head heatmap per entry of ``scores`` (``{name: [L, H]}``), on one colour
    scale centred at 0 so panels compare."""
    names = list(scores)
    n_cols = max(1, min(n_cols, len(names)))
    n_rows = math.ceil(len(names) / n_cols)
    panel = max(240, 14 * np.shape(next(iter(scores.values())))[0])  # pixels a panel
    height = 150 + n_rows * (panel + 70)
    fig = make_subplots(n_rows, n_cols, subplot_titles=names if len(names) > 1 else None,
                        horizontal_spacing=0.06, vertical_spacing=70 / height)
    bound = max(float(np.nanmax(np.abs(s))) for s in scores.values()) or 1.0
    for i, name in enumerate(names):
        z = np.asarray(scores[name], dtype=float)
        fig.add_trace(go.Heatmap(
            z=z, x=list(range(z.shape[1])), y=list(range(z.shape[0])), coloraxis="coloraxis",
            hovertemplate=f"{name}<br>layer %{{y}}, head %{{x}}: %{{z:.4g}}<extra></extra>",
        ), row=i // n_cols + 1, col=i % n_cols + 1)
    n_layers, n_heads = np.shape(next(iter(scores.values())))
    fig.update_xaxes(dtick=1 if n_heads <= 16 else None)
    fig.update_xaxes(title_text="head", row=n_rows)
    fig.update_yaxes(dtick=max(1, round(n_layers / 12)))
    fig.update_yaxes(title_text="layer", col=1)
    fig.update_layout(
        title=title, coloraxis={"colorscale": DIVERGING, "cmin": -bound, "cmax": bound,
                                "colorbar": {"title": value_name}},
        **{**LAYOUT, "height": height,
           "margin": {**LAYOUT["margin"], "t": 100 if len(names) > 1 else 50}},
    )
    return fig


def heldout_figure(
    predicted: Sequence[float], measured: Sequence[float],
    each: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
) -> go.Figure:
    """Measured target against the fit's prediction on held-out masks (left: the example-mean
    target; right: a few examples each), with the line y = x."""
    panels = 2 if each else 1
    fig = make_subplots(1, panels, horizontal_spacing=0.1, subplot_titles=(
        ["pooled (mean over examples)", "per example"] if each else None))
    _identity_scatter(fig, predicted, measured, "pooled", COLORS[0], col=1)
    for i, (name, (p, m)) in enumerate((each or {}).items()):
        _identity_scatter(fig, p, m, name, COLORS[(i + 1) % len(COLORS)], col=2)
    fig.update_xaxes(title_text="predicted target (linear fit)")
    fig.update_yaxes(title_text="measured target")
    fig.update_layout(title="Held-out masks: measured target against the fit's prediction",
                      **{**LAYOUT, "height": 450, "margin": {**LAYOUT["margin"], "t": 90}})
    return fig


def _identity_scatter(fig: go.Figure, x: Sequence[float], y: Sequence[float], name: str,
                      color: str, col: int) -> None:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    fig.add_trace(go.Scatter(x=x, y=y, mode="markers", name=name,
                             marker={"color": color, "size": 5, "opacity": 0.6}), row=1, col=col)
    low, high = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    fig.add_trace(go.Scatter(x=[low, high], y=[low, high], mode="lines", showlegend=False,
                             line={"color": "gray", "dash": "dash"}, hoverinfo="skip"),
                  row=1, col=col)


def curves_figure(
    ks: Sequence[int], faithfulness: Mapping[str, Sequence[float]],
    completeness: Mapping[str, Sequence[float]], random_completeness: Sequence[float] | None,
) -> go.Figure:
    """Faithfulness (left) and completeness (right) against k, one line per ranking; the
    completeness of random k heads dashed."""
    fig = make_subplots(1, 2, horizontal_spacing=0.1, subplot_titles=[
        "faithfulness: keep only the top k (share of the target restored)",
        "completeness: ablate only the top k (share of the target lost)"])
    for i, name in enumerate(faithfulness):
        color = COLORS[i % len(COLORS)]
        fig.add_trace(go.Scatter(x=list(ks), y=list(faithfulness[name]), mode="lines+markers",
                                 name=name, legendgroup=name, line={"color": color}),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=list(ks), y=list(completeness[name]), mode="lines+markers",
                                 name=name, legendgroup=name, showlegend=False,
                                 line={"color": color}), row=1, col=2)
    if random_completeness is not None:
        fig.add_trace(go.Scatter(x=list(ks), y=list(random_completeness), mode="lines+markers",
                                 name="random k heads", line={"color": "gray", "dash": "dash"}),
                      row=1, col=2)
    fig.update_xaxes(title_text="k (heads, of all layers)", type="log", tickvals=list(ks))
    fig.update_yaxes(title_text="share of (clean − all ablated)")
    fig.update_layout(title="Faithfulness and completeness of the top-k heads",
                      **{**LAYOUT, "height": 430, "margin": {**LAYOUT["margin"], "t": 90}})
    return fig


def topk_figure(
    ks: Sequence[int], drops: Mapping[str, Sequence[float]], random_drop: Sequence[float],
    random_std: Sequence[float] | None = None,
) -> go.Figure:
    """Drop of the target when the top k heads of each ranking, or k random heads, are
    ablated: grouped bars per k."""
    labels = [str(k) for k in ks]
    fig = go.Figure()
    for i, (name, values) in enumerate(drops.items()):
        fig.add_trace(go.Bar(x=labels, y=list(values), name=f"top k by {name}",
                             marker_color=COLORS[i % len(COLORS)]))
    fig.add_trace(go.Bar(
        x=labels, y=list(random_drop), name="k random heads", marker_color="#999",
        error_y=None if random_std is None else {"type": "data", "array": list(random_std)}))
    fig.update_layout(barmode="group", title="Ablating the top k heads against k random heads",
                      xaxis_title="k (heads ablated)",
                      yaxis_title="drop of the target (clean − ablated)", **LAYOUT)
    return fig


def agreement_figure(
    attribution: np.ndarray, others: Mapping[str, np.ndarray],
    correlations: Mapping[str, float | None], name: str = "attribution",
) -> go.Figure:
    """Each head's pooled ``name`` score (the attribution) against its score by another
    ranking (one panel per ranking), hover naming the head."""
    names = list(others)
    n_heads = np.shape(attribution)[1]
    heads = [f"L{i // n_heads}H{i % n_heads}" for i in range(np.size(attribution))]
    titles = [f"{other} (Spearman {_corr(correlations.get(other))})" for other in names]
    fig = make_subplots(1, len(names), subplot_titles=titles, horizontal_spacing=0.1)
    layer = np.repeat(np.arange(np.shape(attribution)[0]), n_heads)
    for col, other in enumerate(names, start=1):
        fig.add_trace(go.Scatter(
            x=np.ravel(others[other]), y=np.ravel(attribution), mode="markers", text=heads,
            marker={"color": layer, "colorscale": "Viridis", "size": 7, "showscale": col == 1,
                    "colorbar": {"title": "layer"}},
            hovertemplate=f"%{{text}}: %{{x:.4g}}, {name} %{{y:.4g}}<extra></extra>",
            showlegend=False), row=1, col=col)
        fig.update_xaxes(title_text=other, row=1, col=col)
    fig.update_yaxes(title_text=f"{name} (pooled)", row=1, col=1)
    fig.update_layout(title=f"{name[:1].upper()}{name[1:]} against other rankings, one point "
                            "per head",
                      **{**LAYOUT, "height": 430, "margin": {**LAYOUT["margin"], "t": 90}})
    return fig


def _corr(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.2f}"


def position_figure(
    tokens: Sequence[str], scores: Mapping[str, Sequence[float]], title: str
) -> go.Figure:
    """Drop of the target per text query position (bars over the prompt's tokens), one bar
    series per example; the positions must be the same tokens for every series."""
    labels = [f"{i}: {tok}" for i, tok in enumerate(tokens)]
    fig = go.Figure()
    for i, (name, values) in enumerate(scores.items()):
        fig.add_trace(go.Bar(x=labels, y=list(values), name=name,
                             marker_color=COLORS[i % len(COLORS)]))
    fig.update_layout(barmode="group", title=title,
                      xaxis_title="text query position (after the image)",
                      yaxis_title="drop of the target", **LAYOUT)
    fig.update_xaxes(tickangle=-45)
    return fig


def consistency_figure(
    similarity: np.ndarray, labels: Sequence[str], within: float, across: float,
    per_class: Mapping[str, float], metric: str,
) -> go.Figure:
    """Left: example x example similarity of attributions, sorted by class; right: the mean
    within each class, within all classes and across classes."""
    fig = make_subplots(1, 2, column_widths=[0.55, 0.45], horizontal_spacing=0.12,
                        subplot_titles=["similarity of attribution vectors (sorted by class)",
                                        "mean similarity"])
    ticks = [f"{i}: {label}" for i, label in enumerate(labels)]
    fig.add_trace(go.Heatmap(z=similarity, x=ticks, y=ticks, colorscale=DIVERGING, zmid=0,
                             colorbar={"title": metric, "x": 0.5},
                             hovertemplate="%{y} vs %{x}: %{z:.3f}<extra></extra>"),
                  row=1, col=1)
    bars = {"within classes": within, "across classes": across,
            **{f"within {k}": v for k, v in per_class.items()}}
    fig.add_trace(go.Bar(x=list(bars), y=list(bars.values()), showlegend=False,
                         marker_color=[COLORS[0], "#999"] + [COLORS[1]] * len(per_class)),
                  row=1, col=2)
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    fig.update_yaxes(title_text=f"mean {metric} similarity", row=1, col=2)
    fig.update_layout(title="Do images of one class use similar heads?",
                      **{**LAYOUT, "height": 480, "margin": {**LAYOUT["margin"], "t": 90}})
    return fig


def layer_profile_figure(scores: Mapping[str, np.ndarray]) -> go.Figure:
    """Sum of positive attribution per layer, one line per entry (``{name: [L, H]}``): where
    in depth the heads that carry the image sit."""
    fig = go.Figure()
    for i, (name, values) in enumerate(scores.items()):
        per_layer = np.clip(np.asarray(values, dtype=float), 0, None).sum(1)
        fig.add_trace(go.Scatter(x=list(range(len(per_layer))), y=per_layer.tolist(),
                                 mode="lines+markers", name=name,
                                 line={"color": COLORS[i % len(COLORS)]}))
    fig.update_layout(title="Positive attribution per layer", xaxis_title="layer",
                      yaxis_title="sum of positive coefficients", **LAYOUT)
    integer_ticks(fig, list(range(len(next(iter(scores.values()))))))
    return fig
