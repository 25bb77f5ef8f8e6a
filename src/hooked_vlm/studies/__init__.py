"""Runnable studies: data + model + analysis -> a results directory, resumable.

This package's ``__init__`` stays import-light (the command line reads its constants for
``--help``); each study lives in its own module.
"""

# Tiny random models the demo study runs on (the same text with another image must give the
# same token count, which families with size-dependent layouts do not).
DEMO_CHOICES = ("chameleon", "chameleon-swin", "emu3", "llava", "janus")
DEMO_DEFAULT = ("chameleon", "emu3", "llava")
