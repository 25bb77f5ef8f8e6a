"""Typed settings: frozen dataclasses whose fields are checked against their type hints.

Every configuration of the package (a study's config, :class:`~hooked_vlm.attribution.
AttributionConfig`) is a frozen dataclass with :class:`Settings` mixed in. Construction checks
each field against its annotation (``int``, ``float``, ``bool``, ``str``, ``Literal[...]``,
``X | None``, ``tuple[X, ...]``, ``Mapping[str, X]`` and nested settings), so a YAML
``leave_one_out: "false"`` or ``n: true`` is an error that names the field, not a truthy string
or a 1. The same class gives the YAML loader (:meth:`Settings.from_yaml`), plain values for a
results directory (:meth:`Settings.to_dict`) and the help text of every field (its docstring's
``Attributes:`` section), from which the command line builds its options.

Written here rather than taken from pydantic: pydantic's lax mode turns ``"false"`` and ``1``
into booleans (the very mistake refused here) and its strict mode refuses a YAML list for a
tuple field; the check below is what YAML and the command line need, in one small function.

Example:
    >>> @dataclass(frozen=True)
    ... class Run(Settings):
    ...     '''Attributes:
    ...         n: examples.'''
    ...     n: int = 4
    >>> Run.from_dict({"n": True})
    Traceback (most recent call last):
    ConfigError: n must be an int, got True (a bool)
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

import yaml


class ConfigError(ValueError):
    """A configuration that cannot run as given (the one error type of every config)."""


class Settings:
    """Typed checking, YAML, plain values and field docs for a frozen config dataclass (a mixin).

    ``ALIASES`` maps other accepted names (command line and YAML) to fields. ``EXCLUSIVE``
    pairs fields of which giving one (an override of a file's values) drops the file's other.
    A field holding another ``Settings`` (e.g. the attribution settings of the head-attribution
    study) accepts a mapping, and its fields may also be given at the top level under their
    own names.
    """

    ALIASES: ClassVar[dict[str, str]] = {}
    EXCLUSIVE: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = check_type(f.name, hints[f.name], getattr(self, f.name))
            object.__setattr__(self, f.name, value)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Any:
        """Build from plain values (a YAML mapping): aliases resolved, nested fields gathered;
        an unknown key is an error that lists the known ones."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"a {cls.__name__} is a mapping of field: value, got "
                              f"{type(values).__name__}")
        return cls._build(cls._gather(values))

    @classmethod
    def _build(cls, values: dict[str, Any]) -> Any:
        required = [f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                    if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING]
        missing = [name for name in required if values.get(name) is None]
        if missing:
            raise ConfigError(f"the config needs {', '.join(missing)} (given: "
                              f"{', '.join(sorted(values)) or 'nothing'})")
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            inner, given = _nested(cls).get(f.name), values.get(f.name)
            default = (f.default_factory() if f.default_factory is not dataclasses.MISSING
                       else f.default)
            if inner is not None and isinstance(given, Mapping) and isinstance(default, inner):
                # fields given on top of the field's default
                values[f.name] = inner._merge(default.to_dict(), inner._gather(given))
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> Any:
        """Read a YAML file; ``overrides`` that are not None replace its values.

        Example:
            >>> NarrowGateConfig.from_yaml("study.yaml", n=16, device=None)  # None: the file's
        """
        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text())
        except OSError as err:
            raise ConfigError(f"cannot read the config file {path}: {err.strerror}") from None
        except yaml.YAMLError as err:
            where = getattr(err, "problem_mark", None)
            line = f" (line {where.line + 1})" if where is not None else ""
            raise ConfigError(f"{path} is not valid YAML{line}: "
                              f"{getattr(err, 'problem', None) or err}") from None
        values = values or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: a config file is a YAML mapping of field: value, got a "
                              f"{type(values).__name__}")
        given = cls._gather({k: v for k, v in overrides.items() if v is not None})
        return cls._build(cls._merge(cls._gather(values), given))

    @classmethod
    def _gather(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """Field names for aliases; top-level names of nested settings' fields gathered into
        their mapping."""
        nested = _nested(cls)
        out: dict[str, Any] = {}
        for key, value in values.items():
            key = cls.ALIASES.get(key, key)
            owner = next((n for n, c in nested.items() if key in c.accepted_names()), None)
            if key in nested and isinstance(value, Mapping):
                out[key] = {**out.get(key, {}), **nested[key]._gather(value)}
            elif key in cls.field_names():
                out[key] = value
            elif owner is not None:
                out.setdefault(owner, {})[key] = value
            else:
                close = difflib.get_close_matches(key, cls.accepted_names(), n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"unknown {cls.__name__} field {key!r}.{hint} Known: "
                                  f"{', '.join(sorted(cls.accepted_names()))}")
        return out

    @classmethod
    def _merge(cls, base: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        """``base`` updated by ``given``; nested mappings merged key by key."""
        out = {k: v for k, v in base.items()
               if not any(k == other and one in given and other not in given
                          for one, other in cls.EXCLUSIVE)}
        for key, value in given.items():
            inner = _nested(cls).get(key)
            if inner is not None and isinstance(value, Mapping) and isinstance(out.get(key),
                                                                             Mapping):
                value = inner._merge(dict(out[key]), dict(value))
            out[key] = value
        return out

    # ------------------------------------------------------------------ reading
    def replace(self, **changes: Any) -> Any:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (tuples as lists, nested settings as mappings)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))  # type: ignore[call-overload]

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def option_hints(cls) -> dict[str, Any]:
        """Type hint of every option: the fields, nested settings' fields flat."""
        out: dict[str, Any] = {}
        for name, hint in _hints(cls).items():
            if name in cls.field_names():
                inner = _nested(cls).get(name)
                out.update(inner.option_hints() if inner is not None else {name: hint})
        return out

    @classmethod
    def accepted_names(cls) -> list[str]:
        """Every name a value may be given under: options and aliases, nested ones too."""
        return [*cls.option_hints(), *cls.ALIASES,
                *(a for inner in _nested(cls).values() for a in inner.ALIASES)]

    @classmethod
    def field_docs(cls) -> dict[str, str]:
        """Each option's help, from the ``Attributes:`` section of the class docstrings (a
        line ``a, b: text`` documents both)."""
        docs: dict[str, str] = {}
        for inner in _nested(cls).values():
            docs.update(inner.field_docs())
        return {**docs, **_parse_attributes(cls.__doc__ or "")}


# ---------------------------------------------------------------------- type checks
def check_type(name: str, hint: Any, value: Any) -> Any:
    """``value`` checked against ``hint`` (and normalised: lists to tuples, mappings to dicts,
    nested mappings to settings); a :class:`ConfigError` naming ``name`` otherwise.

    Example:
        >>> check_type("top_k", tuple[int, ...], [1, 2])
        (1, 2)
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return check_type(name, option, value)
            except ConfigError as err:
                errors.append(err)
        if len(options) == 1:
            raise errors[0]
        raise ConfigError(f"{name} must be {' or '.join(_describe(o) for o in options)}"
                          f"{' or null' if type(None) in args else ''}, got {value!r}")
    if origin is Literal:
        if value not in args or isinstance(value, bool) != isinstance(args[0], bool):
            raise ConfigError(f"{name} must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        inner = args[0] if args else Any
        return tuple(check_type(f"{name}[{i}]", inner, v) for i, v in enumerate(value))
    if origin in (Mapping, dict, typing.Mapping) or hint in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name} must be a mapping of key: value, got {value!r}")
        kind = args[1] if len(args) == 2 else Any
        return {str(k): check_type(f"{name}.{k}", kind, v) for k, v in value.items()}
    inner = _settings_class(hint)
    if inner is not None:
        if isinstance(value, inner):
            return value
        if isinstance(value, Mapping):
            try:
                return inner.from_dict(value)
            except ConfigError as err:
                raise ConfigError(f"{name}: {err}") from None
        raise ConfigError(f"{name} must be a mapping of {inner.__name__} fields, got {value!r}")
    return _scalar(name, hint, value)


def _scalar(name: str, hint: Any, value: Any) -> Any:
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}"
                              + (" (a string: write it without quotes)"
                                 if isinstance(value, str) else ""))
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            kind = " (a bool)" if isinstance(value, bool) else ""
            raise ConfigError(f"{name} must be an int, got {value!r}{kind}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {value!r}")
        return float(value) if isinstance(value, int) else value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return value
    if isinstance(hint, type) and not isinstance(value, hint):
        raise ConfigError(f"{name} must be a {hint.__name__}, got {value!r}")
    return value


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is tuple:
        return "a list"
    if origin in (Mapping, dict):
        return "a mapping"
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(hint)))
    return {int: "an int", float: "a number", str: "a string", bool: "true/false"}.get(
        hint, getattr(hint, "__name__", str(hint)))


def _settings_class(hint: Any) -> type[Settings] | None:
    """The settings class of a nested field's hint (``X`` or ``X | None``), else None."""
    for candidate in (hint, *typing.get_args(hint)):
        if isinstance(candidate, type) and issubclass(candidate, Settings):
            return candidate
    return None


def _nested(cls: type) -> dict[str, type[Settings]]:
    """The fields of ``cls`` that hold settings of their own, with their classes."""
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return {n: c for n, h in _hints(cls).items() if n in fields and (c := _settings_class(h))}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


_ATTRIBUTE = re.compile(r"^(\s*)([a-z_][a-z0-9_]*(?:,\s*[a-z_][a-z0-9_]*)*):\s*(.*)$")


def _parse_attributes(doc: str) -> dict[str, str]:
    lines = doc.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "Attributes:"), None)
    if start is None:
        return {}
    out: dict[str, str] = {}
    names: list[str] = []
    indent = None
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        match = _ATTRIBUTE.match(line)
        depth = len(line) - len(line.lstrip())
        if indent is None:
            indent = depth
        if depth < indent:
            break
        if match and depth == indent:
            names = [n.strip() for n in match.group(2).split(",")]
            for n in names:
                out[n] = match.group(3).strip()
        elif names:
            for n in names:
                out[n] += " " + line.strip()
    return out


# ---------------------------------------------------------------------- range checks
def check_positive(name: str, value: int) -> None:
    """``value`` must be >= 1."""
    if value < 1:
        raise ConfigError(f"{name} must be >= 1, got {value!r}")


def check_count(name: str, value: int) -> None:
    """``value`` must be >= 0."""
    if value < 0:
        raise ConfigError(f"{name} must be >= 0, got {value!r}")


DEVICE = re.compile(r"^(cpu|meta|mps|(cuda|xpu)(:\d+)?)$")


def check_device(device: str) -> None:
    """A torch device name this package can place a model on (not checked for presence)."""
    if not DEVICE.match(device):
        raise ConfigError(f"device {device!r} is not a device name: use cpu, cuda, cuda:1, mps "
                          "or xpu")
