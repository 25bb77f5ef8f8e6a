"""attention_on_image figures: the picture, and the grid's cells stretched over the model's view."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hooked_vlm import HookedVLM
from hooked_vlm.testing.tiny import build_tiny
from hooked_vlm.viz import attention_on_image, attention_on_image_grid


def picture(height: int = 40, width: int = 60) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)


def cell_edges(trace, n: int, axis: str) -> tuple[float, float]:
    """Outer edges of ``n`` heatmap cells along ``axis`` ("x" or "y")."""
    start, step = trace[f"{axis}0"], trace[f"d{axis}"]
    return start - step / 2, start + (n - 0.5) * step


def test_one_heatmap_over_the_whole_picture():
    grid = torch.rand(4, 6)
    fig = attention_on_image(picture(), grid, title="layer 3")
    image, heat = fig.data
    assert image.type == "image" and np.asarray(image.z).shape == (40, 60, 3)
    assert heat.type == "heatmap" and np.allclose(np.asarray(heat.z), grid.numpy())
    assert cell_edges(heat, 6, "x") == (-0.5, 59.5)  # go.Image puts pixel centres at 0..59
    assert cell_edges(heat, 4, "y") == (-0.5, 39.5)
    assert list(fig.layout.yaxis.range) == [39.5, -0.5]  # image rows run downwards
    assert fig.layout.title.text == "layer 3"
    fig.to_json()


@pytest.mark.parametrize(("fit", "x_edges", "y_edges"), [
    ("center_crop", (9.5, 49.5), (-0.5, 39.5)),   # the central 40 x 40 square
    ("pad", (-0.5, 59.5), (-10.5, 49.5)),          # a 60 x 60 square, 10 rows off each side
])
def test_crop_and_pad_move_the_cells_with_the_view(fit, x_edges, y_edges):
    heat = attention_on_image(picture(), torch.rand(4, 4), fit=fit).data[1]
    assert cell_edges(heat, 4, "x") == x_edges
    assert cell_edges(heat, 4, "y") == y_edges


def test_pil_and_grey_and_float_pictures_are_drawn_as_rgb():
    grid = np.ones((2, 2))
    for image in (Image.fromarray(picture()), picture()[..., 0], picture() / 255.0):
        assert np.asarray(attention_on_image(image, grid).data[0].z).shape == (40, 60, 3)


def test_small_multiples_share_one_colour_scale():
    grids = torch.rand(5, 4, 6)
    grids[2, 0, 0] = float("nan")  # e.g. a cell off the picture
    fig = attention_on_image_grid(picture(), grids, titles=[f"head {h}" for h in range(5)],
                                  n_cols=3)
    heats = [t for t in fig.data if t.type == "heatmap"]
    assert len(heats) == 5 and sum(t.type == "image" for t in fig.data) == 5
    for heat, grid in zip(heats, grids, strict=True):
        assert np.allclose(np.asarray(heat.z, dtype=float), grid.numpy(), equal_nan=True)
        assert heat.coloraxis == "coloraxis"
    assert fig.layout.coloraxis.cmin == pytest.approx(float(np.nanmin(grids.numpy())))
    assert fig.layout.coloraxis.cmax == pytest.approx(float(np.nanmax(grids.numpy())))
    assert [a.text for a in fig.layout.annotations] == [f"head {h}" for h in range(5)]
    assert fig.layout.yaxis5.scaleanchor == "x5"  # every panel keeps the picture's aspect


def test_bad_inputs_are_refused_with_what_to_pass():
    with pytest.raises(ValueError, match=r"expected \[rows, cols\]"):
        attention_on_image(picture(), torch.rand(24))
    with pytest.raises(ValueError, match=r"channels last"):
        attention_on_image(np.zeros((3, 40, 60)), torch.rand(2, 2))
    with pytest.raises(ValueError, match="0..1"):
        attention_on_image(np.full((4, 4, 3), 2.5), torch.rand(2, 2))
    with pytest.raises(ValueError, match="one title per panel"):
        attention_on_image_grid(picture(), torch.rand(3, 2, 2), titles=["a"])
    with pytest.raises(ValueError, match="fit="):
        attention_on_image(picture(), torch.rand(2, 2), fit="stretch")


def test_readme_attention_on_the_picture_runs():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### Attention on the picture", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope = {"torch": torch, "HookedVLM": HookedVLM, "build_tiny": build_tiny}
    with torch.no_grad():
        exec(compile(code, "README-attention-on-the-picture", "exec"), scope)
    assert scope["heats"].shape == (2, 2, 2)  # layers, then the 2x2 merged grid of image 0
    assert len(scope["fig"].data) == 4
