"""The session of a study: what its stages read, loaded once per process.

:class:`Session` holds the config, the results directory and its unit store, the finished
stages' results (read once) and the fingerprint of the model it loaded. A study's session
subclasses it with its model and data. Building one validates everything a run depends on
(the model and its processor, the data, the device, the ranges of the config against the
model) and writes nothing: a run that cannot start leaves no trace.

Example:
    >>> class MySession(Session):
    ...     def __init__(self, config, out_dir, weights=True):
    ...         super().__init__(config, out_dir)
    ...         self.model = load_study_model(config.model, device=config.device,
    ...                                       weights=weights)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from hooked_vlm.settings import ConfigError
from hooked_vlm.storage import Store, UnitStore
from hooked_vlm.studies.study import Result

if TYPE_CHECKING:
    from hooked_vlm.model import HookedVLM

R = TypeVar("R", bound=Result)


class Session:
    """Config, results directory, unit store and results of a run (see the module docstring).

    ``model`` (set by a study's session, or None): the loaded model whose fingerprint is
    part of the run's identity. ``notes``: what the session wants said at the start of the
    run (e.g. which token is the gate).
    """

    model: HookedVLM | None = None

    def __init__(self, config: Any, out_dir: str | Path) -> None:
        self.config = config
        self.root = Path(out_dir)
        self.units = UnitStore(self.root / "units")
        self.notes: list[str] = []
        self._results: dict[type, Result] = {}
        self._weights: str | None = None

    def result(self, kind: type[R]) -> R:
        """The finished stage's typed result (read once: results are never rewritten)."""
        if kind not in self._results:
            loaded = kind.load(self.root)
            if loaded is None:
                raise ConfigError(f"stage {kind.STAGE!r} has no results in {self.root} yet: "
                                  "run it first")
            self._results[kind] = loaded
        return self._results[kind]  # type: ignore[return-value]

    def fingerprint(self) -> dict[str, str | None]:
        """``{"weights", "processor"}`` of the loaded model (weights None: loaded without)."""
        from hooked_vlm.fingerprint import processor_fingerprint, weights_fingerprint

        if self.model is None:
            return {}
        if self._weights is None and self.has_weights():
            self._weights = weights_fingerprint(self.model.hf_model)
        return {"weights": self._weights, "processor": processor_fingerprint(self.model.processor)}

    def fingerprint_from(self, fingerprint: dict[str, str | None]) -> None:
        """The weights' fingerprint from the workers that hold them (a session without)."""
        self._weights = fingerprint.get("weights")

    def has_weights(self) -> bool:
        """Whether the model's weights are loaded (not on PyTorch's meta device)."""
        return self.model is not None and next(
            self.model.hf_model.parameters()).device.type != "meta"

    def device(self) -> str:
        """Where the model runs: its device, or the configured one (loaded without weights)."""
        return str(self.model.device) if self.has_weights() else self.config.device

    def info(self) -> dict[str, Any]:
        """What the report's header says about the run (``session.json``): the model here, a
        study's session adds its data."""
        if self.model is None:
            return {}
        cfg = self.model.cfg
        return {"model": self.config.model, "model_config": self.model.model_config.name,
                "architecture": cfg.architecture, "native": cfg.native, "n_layers": cfg.n_layers,
                "d_model": cfg.d_model, "device": self.device(),
                "dtype": str(self.model.dtype).removeprefix("torch.")}


def load_study_model(
    name: str,
    *,
    device: str = "cpu",
    dtype: str | None = None,
    model_config: str | None = None,
    tasks: Sequence[str] = (),
    weights: bool = True,
) -> HookedVLM:
    """The model of a study, with the processor and prompt templates (of ``tasks``) it needs.

    ``weights=False``: the model on PyTorch's meta device (config, tokenizer and processor, no
    weights read): what a driver needs whose units run in other processes. Running it fails
    loudly. Every failure is a :class:`ConfigError` naming what to fix.

    Example:
        >>> model = load_study_model("chameleon-7b", device="cuda", tasks=["caption"])
    """
    from hooked_vlm.loading import ModelSourceError
    from hooked_vlm.model import HookedVLM

    if weights:
        check_device_present(device)
    placement = {"device": device} if weights else {"device_map": "meta"}
    try:
        model = HookedVLM.from_pretrained(name, dtype=dtype, model_config=model_config,
                                          **placement)
    except ModelSourceError as err:
        raise ConfigError(f"model {name!r}: {err}") from None
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(f"cannot load model {name!r}: {type(err).__name__}: {err}") from None
    prompts = model.model_config.prompts if model.model_config is not None else {}
    missing = [task for task in tasks if task not in prompts]
    if not prompts or missing:
        raise ConfigError(
            f"{name!r} has no model config with prompt templates for "
            f"{', '.join(missing or ['caption', 'vqa', 'classify'])}, which the study needs. Name "
            "one with model_config (--model-config): a shipped name (e.g. chameleon-7b) or a "
            "YAML file path."
        )
    if model.processor is None:
        raise ConfigError(f"{name!r} ships no processor: the study needs one to turn images "
                          "and prompts into inputs")
    return model


def load_data(source: str, what: str, **options: Any) -> Any:
    """``load_study_data(source, **options)``; a source it cannot use is a :class:`ConfigError`
    naming ``what`` it was for."""
    from hooked_vlm.data import load_study_data

    try:
        return load_study_data(source, **options)
    except (ValueError, OSError, RuntimeError) as err:
        raise ConfigError(f"{what}: {err}") from None


def check_device_present(device: str) -> None:
    """Refuse a device this machine does not have (before any weight is read)."""
    import torch

    kind = device.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: CUDA is not available here (torch "
                          f"{torch.__version__}, {torch.cuda.device_count()} GPUs): use "
                          "--device cpu, or a machine with a GPU")
    if kind == "cuda" and ":" in device and int(device.split(":")[1]) >= torch.cuda.device_count():
        raise ConfigError(f"device {device!r}: this machine has {torch.cuda.device_count()} "
                          "GPU(s)")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r}: Apple's MPS is not available here")


def chunked(n: int, size: int) -> list[range]:
    """``range(n)`` cut into consecutive pieces of ``size`` (the last may be shorter).

    Example:
        >>> chunked(10, 4)
        [range(0, 4), range(4, 8), range(8, 10)]
    """
    return [range(start, min(start + size, n)) for start in range(0, n, size)]


def key_index(key: str) -> int:
    """The index a unit key ends with: ``"knockout/vqa/zero/0003"`` -> 3."""
    return int(key.rsplit("/", 1)[-1])


def stacked(store: Store, keys: Sequence[str], name: str, axis: int = 0) -> np.ndarray:
    """Array ``name`` of every unit of ``keys``, concatenated along ``axis``, in order."""
    return np.concatenate([store.load(key)[name] for key in keys], axis=axis)
