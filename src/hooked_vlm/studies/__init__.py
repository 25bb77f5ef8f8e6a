"""Runnable studies: stages of keyed units -> one store -> typed results -> a report.

A study is a :class:`Study` record (config class, session, :class:`Stage` s, report) and
:func:`run_study` runs any of them: resumably, as shards, or on Ray workers. The studies that
ship are registered by name (:mod:`hooked_vlm.studies.registry`): ``narrow-gate``,
``head-attribution`` (and the ``demo`` that runs both on the embedded models). Your own study
is the same record (README: "Your own study").

This package's ``__init__`` stays import-light (the command line reads it for ``--help``):
names are imported on first use.

Example:
    >>> from hooked_vlm.studies import run_study, get_study
    >>> study = get_study("narrow-gate")
    >>> run_study(study, study.config(model="tiny-native", data="synthetic", n=16), "results/ng")
"""

from __future__ import annotations

from hooked_vlm._lazy import lazy_exports

# The trained tiny models that ship in the package (hooked_vlm/embedded/), which the demo runs
# both studies on, offline: two Chameleons (tiny-gate reads the image only through EOI) and a LLaVA.
DEMO_CHOICES = ("tiny-native", "tiny-gate", "tiny-llava")

_EXPORTS = {
    "Study": "hooked_vlm.studies.study",
    "Stage": "hooked_vlm.studies.study",
    "Result": "hooked_vlm.studies.study",
    "StudyConfig": "hooked_vlm.studies.study",
    "Session": "hooked_vlm.studies.session",
    "load_study_model": "hooked_vlm.studies.session",
    "run_study": "hooked_vlm.studies.runner",
    "StudyJob": "hooked_vlm.studies.runner",
    "Summary": "hooked_vlm.studies.runner",
    "Progress": "hooked_vlm.studies.runner",
    "get_study": "hooked_vlm.studies.registry",
    "STUDIES": "hooked_vlm.studies.registry",
}

__getattr__, _names = lazy_exports(__name__, _EXPORTS)
__all__ = ["DEMO_CHOICES", *_names]
