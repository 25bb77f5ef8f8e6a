"""The Narrow Gate study (REFERENCE.md, Paper 1): does image information reach text through
one token? Seven stages, each a set of resumable work units, then one HTML report.

=================  ===========================================================================
stage              what it measures (data)
=================  ===========================================================================
``gap``            text-image cosine per layer (median, IQR) and modality homogeneity (caption)
``flow``           shares of text->image attention: EOI, last image, >1% keys, rest (caption)
``overlap``        label overlap of the EOI / last image / mean image residuals (classify)
``knockout``       none / gate / image / random-k / all cut, "zero" and "mask": CIDEr-D,
                   VQA accuracy, last-token overlap and class accuracy (all three)
``progressive``    the gate or the image cut in the last w layers only (classify)
``patching``       gate residual per layer, attention input l..L-1: flips, LD, similarity
``steering``       class-mean gate differences added at scale s: flips toward the target
=================  ===========================================================================

Example:
    >>> from hooked_vlm.studies import run_study
    >>> from hooked_vlm.studies.narrow_gate import NARROW_GATE, NarrowGateConfig
    >>> config = NarrowGateConfig(model="tiny-native", data="synthetic", n=16)
    >>> summary = run_study(NARROW_GATE, config, "results/narrow_gate")   # resumes if killed
    >>> summary.report                                                    # the HTML report
"""
from __future__ import annotations

from hooked_vlm._lazy import lazy_exports

_EXPORTS = {
    "NARROW_GATE": "hooked_vlm.studies.narrow_gate.study",
    "NarrowGateConfig": "hooked_vlm.studies.narrow_gate.config",
    "STAGES": "hooked_vlm.studies.narrow_gate.config",
    "NarrowGateSession": "hooked_vlm.studies.narrow_gate.session",
    "write_report": "hooked_vlm.studies.narrow_gate.report",
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
