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

from hooked_vlm.studies.narrow_gate.config import STAGES, NarrowGateConfig
from hooked_vlm.studies.narrow_gate.report import write_report
from hooked_vlm.studies.narrow_gate.session import NarrowGateSession
from hooked_vlm.studies.narrow_gate.stage_flow import FLOW
from hooked_vlm.studies.narrow_gate.stage_knockout import KNOCKOUT, PROGRESSIVE
from hooked_vlm.studies.narrow_gate.stage_patching import PATCHING, STEERING
from hooked_vlm.studies.narrow_gate.stage_representations import GAP, OVERLAP
from hooked_vlm.studies.study import Study

NARROW_GATE = Study(
    "narrow-gate", NarrowGateConfig, NarrowGateSession,
    (GAP, FLOW, OVERLAP, KNOCKOUT, PROGRESSIVE, PATCHING, STEERING), write_report,
    "The Narrow Gate study (Serra et al.): seven stages and an HTML report. Modality gap, "
    "attention flow, label overlap, knockouts, patching and steering at the image's gate token "
    "(EOI, or the last image token). Resumes where a run stopped.",
)
assert tuple(NARROW_GATE.stage_names()) == STAGES

__all__ = ["NARROW_GATE", "STAGES", "NarrowGateConfig", "NarrowGateSession", "write_report"]
