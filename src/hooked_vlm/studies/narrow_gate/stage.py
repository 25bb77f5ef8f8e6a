"""What a stage is: its work units, and the reduction of their arrays into results.

Each stage module (``stage_*.py``) exports one or two :class:`Stage` objects; the runner
computes their units (resumably) and then their reduction, which it stores as
``results/<stage>.json`` (small numbers, headline) and ``results/<stage>.npz`` (arrays).

Example:
    >>> stage = GAP
    >>> units = stage.units(session, store)        # [Unit("gap/0000", ...), ...]
    >>> reduced = stage.reduce(session, store)     # Reduced(values={...}, arrays={...})
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hooked_vlm.studies.narrow_gate.session import Session
from hooked_vlm.studies.units import Unit, UnitStore


@dataclass
class Reduced:
    """A stage's results: JSON-ready ``values``, ``arrays`` and a few headline figures."""

    values: dict[str, Any]
    headline: list[tuple[str, str]]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    """One analysis of the study: units (pure, by index) and their reduction."""

    name: str
    title: str
    units: Callable[[Session, UnitStore], list[Unit]]
    reduce: Callable[[Session, UnitStore], Reduced]


def stacked(
    store: UnitStore, units: Sequence[Unit | str], name: str, axis: int = 0
) -> np.ndarray:
    """Array ``name`` of every unit (or unit key), concatenated along ``axis``, in order."""
    keys = [u if isinstance(u, str) else u.key for u in units]
    return np.concatenate([store.load(key)[name] for key in keys], axis=axis)
