"""TransformerLens bridge pieces shared by several families.

:mod:`hooked_vlm.adapters.vision` holds the vision-tower attention bridges whose patterns can be
edited (CLIP, SigLIP, InternViT, Pixtral) and the guard that makes an edit of an observe-only
pattern raise :class:`PatternEditError`. Each family's own adapter lives in its family module
(:mod:`hooked_vlm.families`), which registers it with TransformerLens.
"""

from hooked_vlm.adapters.vision import PatternEditError

__all__ = ["PatternEditError"]
