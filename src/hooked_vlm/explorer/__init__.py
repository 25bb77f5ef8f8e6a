"""The explorer: one example's attention from each text token over the picture, per layer and
head, with the logit lens on the image patches, as one offline HTML page or a notebook widget.

:func:`collect` runs one forward with reducing hooks (:mod:`.collection`) into
:class:`ExplorerData`; :mod:`hooked_vlm.viz.explorer` draws it: :func:`explore` in a notebook
(:mod:`hooked_vlm.viz.explorer_widget`), :func:`write_page` for a file, ``hooked-vlm explore``
on the command line (:mod:`hooked_vlm.cli_explore`).

Example:
    >>> from hooked_vlm import HookedVLM, explore
    >>> model = HookedVLM.from_pretrained("tiny-llava")
    >>> view = explore(model, model.prepare(picture, task="caption"), images=picture)
    >>> view                      # in Jupyter: the widget; view.token = 3 selects a token
    >>> view.save("page.html")    # the same view as one self-contained page
"""

from hooked_vlm.explorer.api import explore, write_page
from hooked_vlm.explorer.collection import collect, readout
from hooked_vlm.explorer.data import ExplorerData, ImagePanel

__all__ = ["ExplorerData", "ImagePanel", "collect", "explore", "readout", "write_page"]
