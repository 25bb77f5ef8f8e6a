"""Tiny random VLMs for tests: each family's builder, gathered from :mod:`hooked_vlm.families`.

Example:
    >>> tiny = build_tiny("llava")
    >>> logits = tiny.model(**tiny.inputs).logits
"""

from hooked_vlm.families import TINY_BUILDERS, TinyModel, build_tiny
from hooked_vlm.families._tiny import TEXT_VOCAB
from hooked_vlm.families.chameleon import chameleon_vocabulary

__all__ = ["TEXT_VOCAB", "TINY_BUILDERS", "TinyModel", "build_tiny", "chameleon_vocabulary"]
