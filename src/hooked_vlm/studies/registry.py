"""The studies ``hooked-vlm run <study>`` knows, by name, imported only when asked for.

A study of your own needs no registration: ``hooked-vlm run my_module:STUDY`` imports the
:class:`~hooked_vlm.studies.Study` named ``STUDY`` from ``my_module`` (found from the current
directory too).

Example:
    >>> get_study("narrow-gate").stage_names()[:2]
    ['gap', 'flow']
    >>> get_study("my_study:STUDY")          # my_study.py in the current directory
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from hooked_vlm.settings import ConfigError

# name -> ("module:attribute", one line for `hooked-vlm run --help`)
STUDIES: dict[str, tuple[str, str]] = {
    "narrow-gate": ("hooked_vlm.studies.narrow_gate:NARROW_GATE",
                    "The Narrow Gate study (Serra et al.), seven stages and an HTML report."),
    "head-attribution": ("hooked_vlm.studies.head_attribution:HEAD_ATTRIBUTION",
                         "Head attribution (Kim et al. 2025): which heads carry image "
                         "information to the text."),
}


def get_study(name: str) -> Any:
    """The registered study ``name``, or the study at ``module:ATTRIBUTE``."""
    target = STUDIES[name][0] if name in STUDIES else name
    if ":" not in target:
        raise ConfigError(f"unknown study {name!r}; studies: {', '.join(STUDIES)}, or "
                          "module:ATTRIBUTE for a study of your own")
    module, attribute = target.split(":", 1)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"cannot load the study {name!r}: {err}") from None
    from hooked_vlm.studies.study import Study

    if not isinstance(found, Study):
        raise ConfigError(f"{name!r} is a {type(found).__name__}, not a Study")
    return found
