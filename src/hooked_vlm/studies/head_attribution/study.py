"""The study record: its config, session, stages in run order, and report."""

from hooked_vlm.studies.head_attribution.config import STAGES, HeadAttributionConfig
from hooked_vlm.studies.head_attribution.report import write_report
from hooked_vlm.studies.head_attribution.session import HeadAttributionSession
from hooked_vlm.studies.head_attribution.stage_atp import ATP, COMPARE
from hooked_vlm.studies.head_attribution.stage_baselines import BASELINES
from hooked_vlm.studies.head_attribution.stage_consistency import CONSISTENCY
from hooked_vlm.studies.head_attribution.stage_curves import CURVES
from hooked_vlm.studies.head_attribution.stage_fit import FIT
from hooked_vlm.studies.head_attribution.stage_masks import MASKS
from hooked_vlm.studies.head_attribution.stage_tokens import TOKENS
from hooked_vlm.studies.study import Study

HEAD_ATTRIBUTION = Study(
    "head-attribution", HeadAttributionConfig, HeadAttributionSession,
    (MASKS, FIT, BASELINES, ATP, COMPARE, CURVES, TOKENS, CONSISTENCY), write_report)
assert tuple(HEAD_ATTRIBUTION.stage_names()) == STAGES
