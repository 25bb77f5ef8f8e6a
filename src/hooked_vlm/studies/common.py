"""What the studies share: their configuration error, loading the model a study needs, chunks
of examples, and small pictures for the report.

Example:
    >>> model = load_study_model("tiny-llava", device="cpu", tasks=["classify"])
    >>> chunked(10, 4)
    [range(0, 4), range(4, 8), range(8, 10)]
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import yaml

if TYPE_CHECKING:
    from hooked_vlm.model import HookedVLM

PICTURE_SIDE = 192  # pictures kept for a report are at most this many pixels a side


class ConfigError(ValueError):
    """A study configuration that cannot run as given."""


class StudyConfig:
    """Building, copying and identifying a study's frozen config dataclass (a mixin).

    ``STUDY`` names the study in the identity; ``NOT_IDENTITY`` lists the fields the numbers do
    not depend on; ``EXCLUSIVE`` pairs fields of which an override of one drops the file's other.
    """

    STUDY: ClassVar[str]
    NOT_IDENTITY: ClassVar[tuple[str, ...]] = ("stages",)
    EXCLUSIVE: ClassVar[tuple[tuple[str, str], ...]] = ()

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Any:
        """Build from plain values (a YAML mapping); unknown keys raise, listing the known."""
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown study config key(s) {unknown}; known: {sorted(known)}")
        missing = [k for k in ("model", "data") if values.get(k) is None]
        if missing:
            raise ConfigError(f"the study config needs {missing} (a model and its data)")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> Any:
        """Read a YAML file; ``overrides`` (not None) replace its values.

        Example:
            >>> NarrowGateConfig.from_yaml("study.yaml", n=16, device=None)  # None: keep file's
        """
        values = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: a study config is a YAML mapping of field: value")
        given = {k: v for k, v in overrides.items() if v is not None}
        for one, other in cls.EXCLUSIVE:
            if one in given and other not in given:
                values.pop(other, None)
        values.update(given)
        return cls.from_dict(values)

    def replace(self, **changes: Any) -> Any:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))  # type: ignore[call-overload]

    def identity(self) -> dict[str, Any]:
        """What the numbers depend on: every field except ``NOT_IDENTITY``."""
        values = self.to_dict()
        for name in self.NOT_IDENTITY:
            values.pop(name)
        return {"study": self.STUDY, "schema": 1, **values}


def parse_stages(stages: str | Sequence[str | int], known: Sequence[str]) -> list[str]:
    """Stage names from names or numbers from 1 (``"gap,flow"``, ``[1, 2]``), in ``known``'s
    order.

    Example:
        >>> parse_stages("3,a", ["a", "b", "c"])
        ['a', 'c']
    """
    items = stages.split(",") if isinstance(stages, str) else list(stages)
    names = []
    for item in (str(i).strip() for i in items):
        if item.isdigit() and 1 <= int(item) <= len(known):
            item = known[int(item) - 1]
        if item not in known:
            raise ConfigError(f"unknown stage {item!r}; stages: " +
                              ", ".join(f"{i + 1}={s}" for i, s in enumerate(known)))
        names.append(item)
    if not names:
        raise ConfigError("no stage given; stages: " + ", ".join(known))
    return [s for s in known if s in names]


def with_needs(
    stages: Sequence[str], needs: Mapping[str, Sequence[str]]
) -> tuple[list[str], list[str]]:
    """``stages`` followed by the stages they need (``needs``: stage -> stages it reads) that
    are missing, and a note for each one added. Only the needs of ``stages`` themselves are
    added, not those of an added stage.

    Example:
        >>> with_needs(["steering"], {"steering": ("overlap",)})
        (['steering', 'overlap'], ["stage 'steering' needs 'overlap': running it too"])
    """
    wanted, notes = list(stages), []
    for name in list(wanted):
        for need in needs.get(name, ()):
            if need not in wanted:
                wanted.append(need)
                notes.append(f"stage {name!r} needs {need!r}: running it too")
    return wanted, notes


def check_positive(name: str, value: object) -> None:
    """``value`` must be an int >= 1 (a bool is not)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive int, got {value!r}")


def check_count(name: str, value: object) -> None:
    """``value`` must be an int >= 0 (a bool is not)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be an int >= 0, got {value!r}")


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
    loudly.

    Example:
        >>> load_study_model("chameleon-7b", device="cuda", tasks=["caption", "classify"])
    """
    from hooked_vlm.model import HookedVLM

    placement = {"device": device} if weights else {"device_map": "meta"}
    model = HookedVLM.from_pretrained(name, dtype=dtype, model_config=model_config, **placement)
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


def chunked(n: int, size: int) -> list[range]:
    """``range(n)`` cut into consecutive pieces of ``size`` (the last may be shorter)."""
    return [range(start, min(start + size, n)) for start in range(0, n, size)]


def thumbnail(image: Any, side: int = PICTURE_SIDE) -> np.ndarray:
    """A PIL picture as uint8 ``[H, W, 3]``, at most ``side`` pixels a side."""
    picture = image.convert("RGB")
    picture.thumbnail((side, side))
    return np.asarray(picture, dtype=np.uint8)


def picture_fit(model: HookedVLM) -> str:
    """How the model's processor fits pictures into its view ("center_crop", "pad" or
    "fill"; see :func:`hooked_vlm.analysis.image_map.view_box`), for drawing on them."""
    images = getattr(model.processor, "image_processor", None)
    if getattr(images, "do_center_crop", False):
        return "center_crop"
    return "pad" if getattr(images, "do_pad", False) else "fill"
