"""Stage 1, masks: the target under every random, held-out, reference and leave-one-out mask,
written into the memory-mapped mask store (``hooked_vlm.attribution``) unit by unit.

An ordinary stage: its keys are the attribution units (``"split/example/chunk"``), its store
the :class:`~hooked_vlm.attribution.MaskStore` (which implements the store protocol), so the
runner resumes, shards and spreads it over Ray workers like any other stage. Its output is
the store itself: nothing is reduced.

Example:
    >>> MASKS.keys(session)[:2]
    ['train/0/0', 'train/0/1']
"""

from __future__ import annotations

import numpy as np

from hooked_vlm.attribution import evaluate_unit, units
from hooked_vlm.studies.head_attribution.config import runs_with
from hooked_vlm.studies.head_attribution.session import HeadAttributionSession as Session
from hooked_vlm.studies.study import Stage


def _compute(session: Session, key: str) -> dict[str, np.ndarray]:
    return evaluate_unit(session.evaluator, key, session.mask_store)


MASKS = Stage("masks", "1. Masks -> store", lambda session: units(session.evaluator), _compute,
              store=lambda session: session.mask_store, skip=runs_with("regression", "both"))
