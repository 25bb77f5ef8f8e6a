"""Named model configurations (``model_configs/<name>.yaml``): HF id, architecture, special tokens,
prompt templates, image size and dtype. Code reads them; it never branches on model names.

Example:
    >>> cfg = load_model_config("chameleon-7b")
    >>> cfg.hf_id, cfg.prompts["caption"]
    ('facebook/chameleon-7b', '<image>Describe the image in one sentence.')
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_PACKAGE_DIR = Path(__file__).resolve().parent


def config_dir() -> Path:
    """Where the YAML files live: inside the installed package, or the repo's model_configs/."""
    for candidate in (_PACKAGE_DIR / "model_configs", _PACKAGE_DIR.parents[1] / "model_configs"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("hooked-vlm's model_configs/ directory is missing from the install")


@dataclass(frozen=True)
class ModelConfig:
    """One ``model_configs/*.yaml`` entry."""

    name: str
    hf_id: str | None  # None for a model embedded in the package
    architecture: str
    native: bool
    embedded: bool = False  # weights ship inside hooked-vlm (hooked_vlm/embedded/<name>/)
    dtype: str = "float32"
    image_size: int | None = None
    image_tokens: int | None = None
    special_tokens: dict[str, str] = field(default_factory=dict)
    prompts: dict[str, str] = field(default_factory=dict)
    processor_kwargs: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def location(self) -> str:
        """Where the weights are: the package's embedded directory, or the hub id.

        Example:
            >>> load_model_config("tiny-native").location
            '.../hooked_vlm/embedded/tiny-native'
        """
        if self.embedded:
            return str(_PACKAGE_DIR / "embedded" / self.name)
        if not self.hf_id:
            raise ValueError(f"model config {self.name!r} has neither an hf_id nor embedded: true")
        return self.hf_id

    def prompt(self, task: str, **fields: str) -> str:
        """The prompt template for ``task`` ("caption", "vqa", "classify") with fields filled."""
        if task not in self.prompts:
            raise KeyError(f"{self.name} has no {task!r} prompt; it has {sorted(self.prompts)}")
        return self.prompts[task].format(**fields)


def list_model_configs() -> list[str]:
    """Names of every model config shipped with hooked-vlm."""
    return sorted(p.stem for p in config_dir().glob("*.yaml"))


def load_model_config(name: str | Path) -> ModelConfig:
    """Load ``model_configs/<name>.yaml``, or a YAML file of that form given by its path (a
    model of your own, or a local checkpoint the shipped configs do not cover); an unknown name
    lists the known ones.

    Example:
        >>> load_model_config("chameleon-7b").native
        True
        >>> load_model_config("my_configs/my-vlm.yaml").prompts["caption"]
    """
    given = Path(name)
    is_file = given.suffix in (".yaml", ".yml")
    path = given if is_file else config_dir() / f"{name}.yaml"
    if is_file and not path.is_file():
        raise FileNotFoundError(f"no model config file {str(path)!r}")
    if not path.is_file():
        known = list_model_configs()
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"no model config {name!r}.{hint} Known: {', '.join(known)}")
    raw = yaml.safe_load(path.read_text())
    known_fields = set(ModelConfig.__dataclass_fields__) - {"extra"}
    extra = {k: v for k, v in raw.items() if k not in known_fields}
    return ModelConfig(**{k: v for k, v in raw.items() if k in known_fields}, extra=extra)
