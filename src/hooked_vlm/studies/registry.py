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
from dataclasses import dataclass
from typing import Any

from hooked_vlm.settings import ConfigError


@dataclass(frozen=True)
class Registered:
    """Where a shipped study lives: its record and its config (read alone for ``--help``,
    without importing the stages), and one line for ``hooked-vlm run --help``."""

    study: str
    config: str
    help: str


STUDIES: dict[str, Registered] = {
    "narrow-gate": Registered(
        "hooked_vlm.studies.narrow_gate.study:NARROW_GATE",
        "hooked_vlm.studies.narrow_gate.config:NarrowGateConfig",
        "The Narrow Gate study (Serra et al.), seven stages and an HTML report."),
    "head-attribution": Registered(
        "hooked_vlm.studies.head_attribution.study:HEAD_ATTRIBUTION",
        "hooked_vlm.studies.head_attribution.config:HeadAttributionConfig",
        "Head attribution (Kim et al. 2025): which heads carry image information to the text."),
}


def get_study(name: str) -> Any:
    """The registered study ``name``, or the study at ``module:ATTRIBUTE``."""
    from hooked_vlm.studies.study import Study

    return _load(STUDIES[name].study if name in STUDIES else name, Study)


def get_config(name: str) -> type:
    """The config class of study ``name`` (a registered one without importing its stages)."""
    return _load(STUDIES[name].config, type) if name in STUDIES else get_study(name).config


def _load(target: str, kind: type) -> Any:
    if ":" not in target:
        raise ConfigError(f"unknown study {target!r}; studies: {', '.join(STUDIES)}, or "
                          "module:ATTRIBUTE for a study of your own")
    module, attribute = target.split(":", 1)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"cannot load the study {target!r}: {err}") from None
    if not isinstance(found, kind):
        raise ConfigError(f"{target!r} is a {type(found).__name__}, not a {kind.__name__}")
    return found
