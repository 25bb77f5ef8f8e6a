"""What a stage is: the shared :mod:`hooked_vlm.studies.stages` (every study's stages are
built alike), under the name the Narrow Gate runner imports.

Example:
    >>> from hooked_vlm.studies.narrow_gate.stage import Reduced, Stage, stacked
"""

from hooked_vlm.studies.stages import Reduced, Stage, stacked

__all__ = ["Reduced", "Stage", "stacked"]
