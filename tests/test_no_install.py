"""Nothing is installed at run time: TL's torchvision auto-installer cannot run."""

from __future__ import annotations

import subprocess
import sys

from transformer_lens.model_bridge.sources.transformers import helpers

import hooked_vlm  # noqa: F401  (importing it disarms the installer)


def test_tl_torchvision_installer_never_calls_pip(monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "check_call", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import torchvision now fails
    assert helpers._ensure_torchvision() is False or "torchvision" in sys.modules
    assert calls == []


def test_tl_processor_loader_cannot_install(monkeypatch):
    """The loader TL calls for multimodal processors goes through the disarmed function."""
    calls = []
    monkeypatch.setattr(subprocess, "check_call", lambda *a, **k: calls.append(a))
    monkeypatch.setitem(sys.modules, "torchvision", None)

    class Cfg:
        is_multimodal = True

    class Bridge:
        processor = None

    def refuse(*args, **kwargs):
        raise ImportError("torchvision is required for this processor")

    monkeypatch.setattr(helpers.transformers, "AutoProcessor",
                        type("P", (), {"from_pretrained": staticmethod(refuse)}))
    helpers.load_modality_processor(Bridge(), Cfg(), "some/model", False, None)
    assert calls == []
