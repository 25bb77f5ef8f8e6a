"""Runnable studies: data + model + analysis -> a results directory, resumable.

This package's ``__init__`` stays import-light (the command line reads its constants for
``--help``); each study lives in its own subpackage.
"""

# The trained tiny models that ship in the package (hooked_vlm/embedded/): the demo runs both
# studies on them, offline. tiny-native is a Chameleon (images as VQ codes between BOI and EOI),
# tiny-llava a LLaVA (vision tower + projector, no EOI).
DEMO_CHOICES = ("tiny-native", "tiny-llava")
DEMO_DEFAULT = DEMO_CHOICES
