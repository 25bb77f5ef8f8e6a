"""The study record: its config, session, stages in run order, and report."""

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
    (GAP, FLOW, OVERLAP, KNOCKOUT, PROGRESSIVE, PATCHING, STEERING), write_report)
assert tuple(NARROW_GATE.stage_names()) == STAGES
