"""The demo's few knobs, typed and checked before anything is written."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hooked_vlm.settings import ConfigError, Settings
from hooked_vlm.studies import DEMO_CHOICES


@dataclass(frozen=True)
class DemoConfig(Settings):
    """What the demo runs.

    Attributes:
        models: the embedded models to run (of tiny-native, tiny-gate, tiny-llava).
        n: Narrow Gate examples per task (caption, VQA, classification).
        attribution_n: head-attribution examples (classification prompts).
        masks: random head masks per example (plus the held-out ones the study adds).
        seed: seeds both studies.

    Example:
        >>> DemoConfig(models=("tiny-llava",), n=16).identity()["n"]
        16
    """

    models: tuple[str, ...] = DEMO_CHOICES
    n: int = 64
    attribution_n: int = 8
    masks: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [m for m in self.models if m not in DEMO_CHOICES]
        if unknown or not self.models:
            raise ConfigError(f"unknown demo model(s) {unknown or list(self.models)}; choose "
                              f"from {', '.join(DEMO_CHOICES)} (the embedded trained models)")
        if len(set(self.models)) != len(self.models):
            raise ConfigError(f"a model is named twice in {list(self.models)}")
        for name in ("n", "attribution_n", "masks"):
            if getattr(self, name) < 2:
                raise ConfigError(f"{name} must be an integer >= 2, got {getattr(self, name)!r}")

    def identity(self) -> dict[str, Any]:
        """The fields that change a number (all of them), for the results directory."""
        return {"study": "demo", "schema": 4, **self.to_dict()}
