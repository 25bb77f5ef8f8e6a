"""Make TransformerLens' run-time package installation impossible.

TL's ``sources/transformers/helpers.py::_ensure_torchvision`` runs ``pip install torchvision``
when an image processor needs it. In an environment with a pinned CPU torch that pulls a
multi-GB CUDA build and can replace the installed torch. hooked-vlm never boots models through
that path (it builds bridges from in-memory modules), and importing hooked-vlm replaces the
function with one that only reports whether torchvision is importable.
"""

from __future__ import annotations

import importlib.util


def _torchvision_importable_no_install() -> bool:
    """Report whether torchvision can be imported; never install it."""
    return importlib.util.find_spec("torchvision") is not None


def disable_runtime_installs() -> None:
    """Replace TL's auto-installer with :func:`_torchvision_importable_no_install`."""
    from transformer_lens.model_bridge.sources.transformers import helpers

    helpers._ensure_torchvision = _torchvision_importable_no_install
