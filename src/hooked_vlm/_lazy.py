"""Names a package exports, imported on first use (PEP 562), so that importing the package
(and the command line's ``--help``) does not pay for torch.

Example:
    >>> __getattr__, __all__ = lazy_exports(__name__, {"MaskStore": "hooked_vlm.attribution.store"})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], list]:
    """``(__getattr__, __all__)`` of ``package``: each name of ``exports`` (name -> module)
    is imported from its module when first asked for."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__, sorted(exports)
