"""The explorer in a notebook: an anywidget that hosts the very page of
:func:`hooked_vlm.viz.explorer.explorer_html` in an iframe and keeps its selection in sync.

Why anywidget: plotly's own ``FigureWidget`` (plotly 6+) is built on anywidget and
ipywidgets, so anywidget alone is the lighter dependency (anywidget, ipywidgets, psygnal and
the two widget front-end packages; installed by the ``notebook`` extra), and hosting the page
means the notebook and the offline file run one script (``explorer.js``), with the five linked
figures that a single ``FigureWidget`` could not hold. The iframe isolates plotly.js from the
notebook's own copy and module loader.

The selection is two-way: ``view.token`` (the i-th selectable text token), ``view.layer``,
``view.head`` (-1: all heads summed) and ``view.panel`` follow clicks in the page, and setting
them from Python moves the page.

Example:
    >>> view = ExplorerWidget(collect(model, inputs, images=picture))
    >>> view                   # the page, in the notebook
    >>> view.token = 2         # select the third text token
    >>> view.save("page.html")
"""

from __future__ import annotations

from pathlib import Path

import anywidget
import traitlets

from hooked_vlm.explorer.data import ExplorerData

_ESM = """
function render({ model, el }) {
  const frame = document.createElement("iframe");
  frame.style.width = "100%";
  frame.style.border = "0";
  frame.style.height = model.get("height") + "px";
  frame.srcdoc = model.get("page");
  el.appendChild(frame);
  const keys = ["token", "layer", "head", "panel"];
  const push = () => {
    if (!frame.contentWindow) return;
    const select = {};
    keys.forEach((k) => { select[k] = model.get(k); });
    frame.contentWindow.postMessage({ source: "hooked-vlm-explorer-host", select }, "*");
  };
  frame.addEventListener("load", push);
  keys.forEach((k) => model.on("change:" + k, push));
  const listen = (e) => {
    if (e.source !== frame.contentWindow || !e.data || e.data.source !== "hooked-vlm-explorer")
      return;
    keys.forEach((k) => model.set(k, e.data.state[k]));
    model.save_changes();
  };
  window.addEventListener("message", listen);
  return () => window.removeEventListener("message", listen);
}
export default { render };
"""


class ExplorerWidget(anywidget.AnyWidget):
    """The explorer page as a notebook widget; ``data`` holds what it shows."""

    _esm = _ESM
    page = traitlets.Unicode("").tag(sync=True)
    height = traitlets.Int(1750).tag(sync=True)
    token = traitlets.Int(0).tag(sync=True)
    layer = traitlets.Int(0).tag(sync=True)
    head = traitlets.Int(-1).tag(sync=True)
    panel = traitlets.Int(0).tag(sync=True)

    def __init__(self, data: ExplorerData, **kwargs: object) -> None:
        from hooked_vlm.viz.explorer import explorer_html

        self.data = data
        super().__init__(page=explorer_html(data), token=len(data.queries) - 1,
                         layer=data.n_layers // 2, **kwargs)

    def __repr__(self) -> str:
        d = self.data
        return (f"ExplorerWidget({d.title!r}: {len(d.queries)} text tokens x {d.n_layers} layers "
                f"x {d.n_heads} heads over {len(d.patches)} image patches)")

    def save(self, path: str | Path) -> Path:
        """Write the same view as a self-contained HTML page.

        Example:
            >>> view.save("page.html")
        """
        from hooked_vlm.explorer import write_page

        return write_page(self.data, path)

    @traitlets.validate("token")
    def _check_token(self, proposal: dict) -> int:
        return _in_range(proposal["value"], 0, len(self.data.queries) - 1, "token")

    @traitlets.validate("layer")
    def _check_layer(self, proposal: dict) -> int:
        return _in_range(proposal["value"], 0, self.data.n_layers - 1, "layer")

    @traitlets.validate("head")
    def _check_head(self, proposal: dict) -> int:
        return _in_range(proposal["value"], -1, self.data.n_heads - 1, "head (-1: all heads)")

    @traitlets.validate("panel")
    def _check_panel(self, proposal: dict) -> int:
        return _in_range(proposal["value"], 0, len(self.data.panels) - 1, "panel")


def _in_range(value: int, low: int, high: int, name: str) -> int:
    if not low <= value <= high:
        raise traitlets.TraitError(f"{name}={value} is outside {low}..{high}.")
    return value
