"""Nothing is installed at run time: TL's torchvision auto-installer cannot run."""

from __future__ import annotations

import subprocess
import sys

from transformer_lens.model_bridge.sources.transformers import helpers

import hooked_vlm.model  # noqa: F401  (importing the model (its loader) disarms the installer)


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


def test_package_and_cli_import_without_torch():
    """`import hooked_vlm` and the CLI's --help stay light: torch/TL load on first use only."""
    code = (
        "import sys, hooked_vlm, hooked_vlm.cli; "
        "heavy = [m for m in ('torch', 'transformers', 'transformer_lens') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
