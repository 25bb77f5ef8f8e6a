"""The explorer as one self-contained HTML page: plotly.js inline, the data embedded, no server.

:func:`explorer_payload` packs an :class:`~hooked_vlm.explorer.ExplorerData` into compact JSON
(the big arrays as base64 bytes); :func:`explorer_html` puts it, plotly.js and the page's own
script (``explorer.js`` beside this file) into one page. The page draws, for the selected text
token: its attention on the picture for the selected layer and head (or summed over heads),
every layer as small multiples on one colour scale, its attention shares per key group, a
layer x head heatmap of image reading (click a cell to select that head), and the logit lens
on the image patches. The selection lives in the URL fragment
(``page.html#token=2&layer=5&head=3&panel=0``; ``head=all`` sums the heads) and in
``window.hookedVlmExplorer`` (``select({...})``, ``state()``, ``focusMap()``), which the
notebook widget and the tests drive.

What is embedded, with ``T`` text tokens, ``L`` layers, ``H`` heads, ``P`` patches, ``k`` lens
tokens: attention weights as one byte each, ``T*L*H*P`` + ``T*L*P`` (the head sum), each map
scaled to its maximum and stored as ``round(255 * sqrt(w / max))`` (fine steps where attention
is small: the error is below ``max / 255`` for every weight); shares as two bytes,
``2*T*L*H*5``; the lens as ``L*P*k`` ids (2 or 4 bytes) and ``L*P*k`` probability bytes; the
pictures as PNG. plotly.js itself is ~4.8 MB (plotly 7).

Example:
    >>> page = explorer_html(collect(model, inputs, images=picture))
    >>> Path("page.html").write_text(page)
"""

from __future__ import annotations

import base64
import io
import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from plotly.colors import hex_to_rgb, sequential

from hooked_vlm.explorer.data import ExplorerData, ImagePanel
from hooked_vlm.viz.image_overlay import cell_placement
from hooked_vlm.viz.report import standalone_page

_SCRIPT = Path(__file__).with_name("explorer.js")
# Inferno (plotly.js knows it by no name: the stops go with the data), fading to clear at 0
# so that the picture shows through where the token does not look
_STOPS = np.linspace(0, 1, len(sequential.Inferno))
_COLORSCALE = [[float(t), "rgba({}, {}, {}, {:.2f})".format(*hex_to_rgb(c), 0.15 + 0.8 * t)]
               for t, c in zip(_STOPS, sequential.Inferno, strict=True)]


def explorer_payload(data: ExplorerData) -> dict[str, Any]:
    """The page's data as JSON-ready values (arrays as base64 little-endian bytes).

    Example:
        >>> payload = explorer_payload(data)
        >>> decode_weights(payload)[0].shape      # [T, L, H, P], as the page decodes them
    """
    n_queries, n_layers, n_heads, n_patches = data.weights.shape
    heads, head_scale = _quantize(data.weights)
    summed, sum_scale = _quantize(data.weights.sum(2))
    vocab_ids = np.array(sorted(data.vocab), dtype=np.int64)
    local = np.searchsorted(vocab_ids, data.lens_ids)
    id_dtype = "<u2" if len(vocab_ids) < 2**16 else "<u4"
    return {
        "title": data.title,
        "tokens": data.tokens,
        "token_groups": data.token_groups,
        "queries": data.queries.tolist(),
        "n_layers": n_layers,
        "n_heads": n_heads,
        "n_patches": n_patches,
        "groups": list(data.groups),
        "gate": data.gate,
        "colorscale": _COLORSCALE,
        "notes": data.notes,
        "next_tokens": [[name, round(p, 4)] for name, p in data.next_tokens],
        "weights": {
            "heads": _b64(heads), "heads_scale": _b64(head_scale.astype("<f4")),
            "sum": _b64(summed), "sum_scale": _b64(sum_scale.astype("<f4")),
        },
        "shares": _b64(np.round(np.clip(data.shares, 0, 1) * 65535).astype("<u2")),
        "lens": {
            "k": int(data.lens_ids.shape[-1]),
            "vocab": [data.vocab[int(i)] for i in vocab_ids],
            "ids": _b64(local.astype(id_dtype)), "id_bytes": np.dtype(id_dtype).itemsize,
            "probs": _b64(np.round(np.clip(data.lens_probs, 0, 1) * 255).astype(np.uint8)),
        },
        "panels": [_panel(p) for p in data.panels],
        "shape": [n_queries, n_layers, n_heads, n_patches],
    }


def decode_weights(payload: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """``(per head [T, L, H, P], summed over heads [T, L, P])`` as the page decodes them.

    Example:
        >>> heads, summed = decode_weights(explorer_payload(data))
    """
    t, n_layers, n_heads, p = payload["shape"]
    w = payload["weights"]
    heads = _unquantize(w["heads"], w["heads_scale"], (t, n_layers, n_heads, p))
    return heads, _unquantize(w["sum"], w["sum_scale"], (t, n_layers, p))


def explorer_html(data: ExplorerData) -> str:
    """The explorer page: one file that opens offline in any browser.

    Example:
        >>> Path("page.html").write_text(explorer_html(data), encoding="utf-8")
    """
    # "</" may not appear inside a <script> block; "<\/" is the same string to JSON
    payload = json.dumps(explorer_payload(data), separators=(",", ":")).replace("</", "<\\/")
    data_block = f'<script type="application/json" id="explorer-data">{payload}</script>'
    return standalone_page(data.title, _STYLE, _BODY + data_block, explorer_script())


@cache
def explorer_script() -> str:
    """The page's own JavaScript (``explorer.js``)."""
    return _SCRIPT.read_text(encoding="utf-8")


def _quantize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bytes ``round(255 * sqrt(v / max))`` along the last axis, and each row's ``max``."""
    values = np.clip(values.astype(np.float64), 0, None)
    scale = values.max(-1)
    safe = np.where(scale > 0, scale, 1.0)[..., None]
    return np.round(255 * np.sqrt(values / safe)).astype(np.uint8), scale


def _unquantize(data: str, scale: str, shape: tuple[int, ...]) -> np.ndarray:
    q = np.frombuffer(base64.b64decode(data), np.uint8).reshape(shape) / 255.0
    s = np.frombuffer(base64.b64decode(scale), "<f4").reshape(shape[:-1])
    return (q**2 * s[..., None]).astype(np.float32)


def _panel(panel: ImagePanel) -> dict[str, Any]:
    rows, cols = panel.index.shape
    if panel.picture is None:
        height, width, picture = rows, cols, None
    else:
        height, width = panel.picture.shape[:2]
        picture = _png(panel.picture)
    x0, dx, y0, dy = cell_placement((rows, cols), (height, width), panel.fit)
    return {"label": panel.label, "rows": rows, "cols": cols,
            "index": panel.index.reshape(-1).tolist(), "picture": picture,
            "width": width, "height": height, "x0": x0, "dx": dx, "y0": y0, "dy": dy,
            "tiles": list(panel.tiles)}


def _png(picture: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1em 1.5em;
       color: #222; }
h1 { font-size: 1.3em; margin: 0 0 0.3em; } .facts { color: #555; font-size: 0.9em; }
#tokens { line-height: 2.1; margin: 0.6em 0; font-family: ui-monospace, monospace;
          font-size: 0.9em; }
#tokens span { padding: 0.15em 0.3em; margin: 0 1px; border-radius: 3px; }
#tokens .t { color: #999; } #tokens .q { background: #eef3fb; cursor: pointer; color: #123; }
#tokens .q.sel { background: #d62728; color: white; }
#tokens .img { background: #e8e8e8; color: #555; } #tokens .gate { background: #fde9c9; }
.controls { display: flex; flex-wrap: wrap; gap: 1.2em; align-items: center;
            background: #f6f6f6; padding: 0.5em 0.8em; border-radius: 4px; }
.controls label { font-size: 0.9em; } .row { display: flex; flex-wrap: wrap; gap: 0.5em; }
.note { color: #555; font-size: 0.85em; margin: 0.2em 0; }
h2 { font-size: 1.05em; margin: 1.2em 0 0.2em; border-bottom: 1px solid #ddd; }
"""

_BODY = """
<h1 id="title"></h1>
<div class="facts" id="facts"></div>
<div id="tokens"></div>
<div class="controls">
  <label>token <input type="range" id="token-slider" min="0" value="0"></label>
  <label>layer <input type="range" id="layer-slider" min="0" value="0">
    <span id="layer-label"></span></label>
  <label>head <select id="head-select"></select></label>
  <label id="panel-control">picture <select id="panel-select"></select></label>
  <span id="selection" class="note"></span>
</div>
<h2>Attention of the token on the picture: the selected layer, and every layer on one scale</h2>
<div class="row"><div id="fig-focus"></div><div id="fig-layers"></div></div>
<h2>Where the token's attention goes, and which heads read the image</h2>
<div class="row"><div id="fig-shares"></div><div id="fig-heads"></div></div>
<h2>Logit lens on the image patches (the selected layer)</h2>
<div class="row"><div id="fig-lens"></div></div>
<div id="notes"></div>
"""
