"""The explorer's two entry points: :func:`explore` (a notebook widget) and :func:`write_page`
(the self-contained HTML page)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hooked_vlm.explorer.collection import collect
from hooked_vlm.explorer.data import ExplorerData
from hooked_vlm.model import HookedVLM


def explore(model: HookedVLM, inputs: Mapping[str, Any], images: Any = None, **options: Any
            ) -> Any:
    """The explorer for one example as a notebook widget (anywidget: ``pip install
    'hooked-vlm[notebook]'``), computed from one forward. ``images``: the example's pictures
    (see :func:`~hooked_vlm.explorer.collection.collect`); ``options`` go to ``collect``
    (``example``, ``k``, ``tiles``, ``title``).

    Example:
        >>> view = explore(model, inputs, images=[picture])
        >>> view.token, view.layer, view.head        # follow the page's selection
        >>> view.save("page.html")
    """
    try:
        from hooked_vlm.viz.explorer_widget import ExplorerWidget
    except ImportError as err:
        raise ImportError(
            f"the explorer widget needs anywidget ({err}): pip install 'hooked-vlm[notebook]'. "
            "Without it, write the same view as a page: hooked_vlm.explorer.write_page("
            "hooked_vlm.explorer.collection(model, inputs, images), 'page.html')."
        ) from err
    return ExplorerWidget(collect(model, inputs, images, **options))


def write_page(data: ExplorerData, path: str | Path) -> Path:
    """Write the explorer's self-contained HTML page (atomically); returns its path.

    Example:
        >>> write_page(collect(model, inputs, images=picture), "page.html")
    """
    from hooked_vlm.storage import write_atomic
    from hooked_vlm.viz.explorer import explorer_html

    path = Path(path)
    write_atomic(path, explorer_html(data))
    return path
