"""Figures: a per-patch quantity drawn as a heatmap over the picture itself.

Drawing only: the values come ready as a ``[rows, cols]`` grid (see
:func:`hooked_vlm.analysis.image_map.scatter_to_grid`); the heatmap's cells are stretched over
the part of the picture the model saw (``fit``, as in
:func:`hooked_vlm.analysis.image_map.view_box`).

Example:
    >>> heat = scatter_to_grid(pattern[0, :, query].sum(0), patch_grid(layout, 0, **inputs))
    >>> attention_on_image(picture, heat, title="layer 10, all heads").write_html("attn.html")
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from hooked_vlm.analysis.image_map import Fit, view_box


def attention_on_image(
    image: Any,
    grid_values: Any,
    title: str = "",
    opacity: float = 0.55,
    fit: Fit = "fill",
    colorscale: str = "Inferno",
) -> go.Figure:
    """The picture with ``grid_values`` (``[rows, cols]``) as a translucent heatmap over it.

    ``image``: a PIL image or an ``[H, W]`` / ``[H, W, 3 or 4]`` array (uint8, or floats in
    0..1). NaN cells are left clear.

    Example:
        >>> attention_on_image(Image.open("cat.jpg"), heat, fit="center_crop").show()
    """
    return attention_on_image_grid(
        image, _as_grid(grid_values)[None], titles=None, n_cols=1, title=title, opacity=opacity,
        fit=fit, colorscale=colorscale,
    )


def attention_on_image_grid(
    image: Any,
    grid_values: Any,
    titles: Sequence[str] | None = None,
    n_cols: int = 4,
    title: str = "",
    opacity: float = 0.55,
    fit: Fit = "fill",
    colorscale: str = "Inferno",
    cmid: float | None = None,
    width: int | None = None,
) -> go.Figure:
    """Small multiples: one panel per ``grid_values[i]`` (``[n, rows, cols]``: layers, heads),
    all on one colour scale so panels compare. ``image``: one picture under every panel, or a
    list of ``n`` pictures, one per panel (several examples). ``cmid``: centre the colour
    scale on this value (signed scores on a diverging scale: ``cmid=0``). ``width``: the
    figure's width in pixels, panels filling it (default: 320 px a panel, at most 1600).

    Example:
        >>> heats = torch.stack([scatter_to_grid(p[0, :, q].sum(0), grid) for p in patterns])
        >>> attention_on_image_grid(picture, heats, [f"layer {l}" for l in range(len(heats))])
    """
    grids = _as_grid(grid_values, panels=True)
    n = len(grids)
    if isinstance(image, (list, tuple)):
        if len(image) != n:
            raise ValueError(f"{len(image)} pictures for {n} panels: give one picture, or one "
                             "per panel.")
        pictures = [_as_picture(i) for i in image]
    else:
        pictures = [_as_picture(image)] * n
    if titles is not None and len(titles) != n:
        raise ValueError(f"{len(titles)} titles for {n} panels: give one title per panel.")
    n_cols = max(1, min(n_cols, n))
    n_rows = math.ceil(n / n_cols)
    fig_width = width or min(1600, 60 + 320 * n_cols)
    side = (fig_width - 60) / n_cols  # pixels a panel
    fig = make_subplots(n_rows, n_cols, subplot_titles=list(titles) if titles else None,
                        horizontal_spacing=0.02, vertical_spacing=0.08 if titles else 0.02)
    for i, (grid, picture) in enumerate(zip(grids, pictures, strict=True)):
        height, width = picture.shape[:2]
        row, col = i // n_cols + 1, i % n_cols + 1
        fig.add_trace(go.Image(z=picture, hoverinfo="skip"), row=row, col=col)
        fig.add_trace(_heatmap(grid, (height, width), fit, opacity), row=row, col=col)
        fig.update_xaxes(range=[-0.5, width - 0.5], visible=False, row=row, col=col)
        anchor = "x" if i == 0 else f"x{i + 1}"
        fig.update_yaxes(range=[height - 0.5, -0.5], visible=False, scaleanchor=anchor,
                         row=row, col=col)
    finite = grids[np.isfinite(grids)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if cmid is not None:
        half = max(abs(high - cmid), abs(low - cmid)) or 1.0
        low, high = cmid - half, cmid + half
    fig.update_layout(
        title=title, template="plotly_white", margin={"l": 10, "r": 10, "t": 60, "b": 10},
        coloraxis={"colorscale": colorscale, "cmin": low, "cmax": high},
        width=fig_width, height=90 + side * n_rows * pictures[0].shape[0] / max(
            pictures[0].shape[1], 1),
    )
    return fig


def cell_placement(
    grid_shape: tuple[int, int], picture_size: tuple[int, int], fit: Fit = "fill"
) -> tuple[float, float, float, float]:
    """``(x0, dx, y0, dy)`` of a heatmap whose ``[rows, cols]`` cells cover the model's view of
    a picture of ``(height, width)`` pixels, in the pixel coordinates ``go.Image`` draws in
    (pixel centres at integers).

    Example:
        >>> cell_placement((2, 2), (4, 4))
        (0.5, 2.0, 0.5, 2.0)
    """
    top, left, height, width = view_box(picture_size, fit)
    rows, cols = grid_shape
    dy, dx = height / rows, width / cols
    return left - 0.5 + dx / 2, dx, top - 0.5 + dy / 2, dy


def _heatmap(
    grid: np.ndarray, picture_size: tuple[int, int], fit: Fit, opacity: float
) -> go.Heatmap:
    """Cells of ``grid`` spread over the model's view of the picture."""
    x0, dx, y0, dy = cell_placement(grid.shape, picture_size, fit)
    return go.Heatmap(
        z=grid, x0=x0, dx=dx, y0=y0, dy=dy, opacity=opacity, coloraxis="coloraxis",
        hovertemplate="row %{y:.0f}px, col %{x:.0f}px: %{z:.4g}"
        "<extra></extra>",
    )


def _as_picture(image: Any) -> np.ndarray:
    """``[H, W, 3]`` uint8 from a PIL image or an array."""
    array = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ValueError(
            f"image of shape {array.shape}: give a PIL image or an [H, W] / [H, W, 3 or 4] "
            "array (channels last; permute a [3, H, W] tensor first)."
        )
    if array.dtype != np.uint8:
        if array.min() < 0 or array.max() > 1:
            raise ValueError(
                "a float image must lie in 0..1 (or pass uint8): a normalised pixel_values "
                "tensor is not a picture; pass the picture given to the processor."
            )
        array = np.round(array * 255).astype(np.uint8)
    return array[..., :3]


def _as_grid(values: Any, panels: bool = False) -> np.ndarray:
    """A float array ``[rows, cols]`` (or ``[n, rows, cols]`` when ``panels``)."""
    detached = values.detach().cpu() if hasattr(values, "detach") else values
    grid = np.asarray(detached, dtype=float)
    want = 3 if panels else 2
    if grid.ndim != want:
        shape = "[n, rows, cols]" if panels else "[rows, cols]"
        raise ValueError(
            f"grid_values of shape {grid.shape}: expected {shape}, e.g. scatter_to_grid(values, "
            "patch_grid(layout, example, **inputs))."
        )
    return grid
