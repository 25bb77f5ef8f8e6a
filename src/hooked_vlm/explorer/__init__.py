"""The explorer: one example's attention from each text token over the picture, per layer and
head, with the logit lens on the image patches, as one offline HTML page or a notebook widget.

:func:`collect` runs one forward with reducing hooks (:mod:`.collection`) into
:class:`ExplorerData`; :mod:`hooked_vlm.viz.explorer` draws it: :func:`explore` in a notebook
(:mod:`hooked_vlm.viz.explorer_widget`), :func:`write_page` for a file, ``hooked-vlm explore``
on the command line (:mod:`.command`).

Names are imported on first use, so the command line's ``--help`` does not load torch.

Example:
    >>> from hooked_vlm import HookedVLM, explore
    >>> model = HookedVLM.from_pretrained("tiny-llava")
    >>> view = explore(model, model.prepare(picture, task="caption"), images=picture)
    >>> view                      # in Jupyter: the widget; view.token = 3 selects a token
    >>> view.save("page.html")    # the same view as one self-contained page
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "collect": "hooked_vlm.explorer.collection",
    "readout": "hooked_vlm.explorer.collection",
    "ExplorerData": "hooked_vlm.explorer.data",
    "ImagePanel": "hooked_vlm.explorer.data",
    "explore": "hooked_vlm.explorer.api",
    "write_page": "hooked_vlm.explorer.api",
}
__all__ = ["ExplorerData", "ImagePanel", "collect", "explore", "readout", "write_page"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hooked_vlm.explorer' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from hooked_vlm.explorer.api import explore, write_page
    from hooked_vlm.explorer.collection import collect, readout
    from hooked_vlm.explorer.data import ExplorerData, ImagePanel
