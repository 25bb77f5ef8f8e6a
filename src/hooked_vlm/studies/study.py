"""What a study is: a config class, a session, stages of keyed units, typed results, a report.

A :class:`Study` is a record, not a class to subclass:

- ``config``: a frozen dataclass mixing in :class:`StudyConfig` (typed fields, YAML, field
  docs; the command line is generated from it);
- ``session(config, out_dir, weights)``: what every stage reads, loaded once per process (the
  model, the data); it validates everything and writes nothing;
- ``stages``: :class:`Stage` s in run order. A stage lists its unit keys (``keys(session)``,
  a pure function of the config) and computes one key (``compute(session, key)`` -> arrays,
  into the stage's store); its ``reduce(session, store)`` turns the finished units into a
  typed :class:`Result`, stored once as ``results/<stage>.json`` + ``.npz``;
- ``report(out_dir)``: the HTML page drawn from the results (no model needed).

:func:`~hooked_vlm.studies.run_study` runs any study (resume, shards, Ray), so a study adds
nothing but its stages.

Example:
    >>> STUDY = Study("my-study", MyConfig, MySession, (Stage("cut", "1. Cut the image",
    ...               keys=cut_keys, compute=cut_unit, reduce=cut_reduce, result=CutResult),),
    ...               report=write_report)
    >>> run_study(STUDY, MyConfig(model="tiny-llava", data="synthetic"), "results/mine")
"""

from __future__ import annotations

import dataclasses
import io
import json
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from hooked_vlm.settings import ConfigError, Settings
from hooked_vlm.storage import Store, write_atomic

R = TypeVar("R", bound="Result")


class StudyConfig(Settings):
    """A study's config (a frozen dataclass mixin): typed fields, and its identity.

    ``STUDY`` names the study and ``STAGES`` its stages; ``NOT_IDENTITY`` lists the fields the
    numbers do not depend on (which stages to run now, where); every other field is part of
    the results directory's identity. A config has a field ``stages`` (names or numbers from 1,
    as a list or a comma-separated string; None: all), normalised to names in study order.
    """

    STUDY: ClassVar[str]
    STAGES: ClassVar[tuple[str, ...]]
    NOT_IDENTITY: ClassVar[tuple[str, ...]] = ("stages",)

    def __post_init__(self) -> None:
        super().__post_init__()
        stages = getattr(self, "stages", None)
        if stages is not None:
            object.__setattr__(self, "stages", tuple(select_stages(stages, self.STAGES)))

    def identity(self) -> dict[str, Any]:
        """What the numbers depend on: every field except ``NOT_IDENTITY``."""
        values = self.to_dict()
        for name in self.NOT_IDENTITY:
            values.pop(name, None)
        return {"study": self.STUDY, "schema": 2, **values}


class Result:
    """A stage's typed results (mix into a dataclass). Fields annotated ``np.ndarray`` (or
    ``np.ndarray | None``, or ``dict[str, np.ndarray]``, stored as ``field.key``) go to
    ``results/<stage>.npz``; every other field to ``results/<stage>.json`` (``values``), under
    its name or ``field(metadata={"name": ...})`` (an array and a JSON value may share one).
    ``STAGE`` names the stage that writes it; :meth:`headline` gives its summary rows.
    """

    STAGE: ClassVar[str]

    def headline(self) -> list[tuple[str, str]]:
        return []

    def to_npz(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``(values, arrays)``: the JSON-ready fields and the arrays, by name."""
        values: dict[str, Any] = {}
        arrays: dict[str, np.ndarray] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value, kind = getattr(self, f.name), _kind(type(self), f.name)
            name = f.metadata.get("name", f.name)
            if kind == "array" and value is not None:
                arrays[name] = np.asarray(value)
            elif kind == "arrays":
                arrays.update({f"{name}.{k}": np.asarray(v) for k, v in value.items()})
            elif kind == "value":
                values[name] = value
        return values, arrays

    @classmethod
    def from_npz(cls: type[R], values: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> R:
        fields = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            kind, name = _kind(cls, f.name), f.metadata.get("name", f.name)
            if kind == "array":
                fields[f.name] = arrays.get(name)
            elif kind == "arrays":
                prefix = f"{name}."
                fields[f.name] = {k.removeprefix(prefix): v for k, v in arrays.items()
                                  if k.startswith(prefix)}
            else:
                fields[f.name] = values[name]
        return cls(**fields)

    def save(self, root: Path, title: str, seconds: float) -> None:
        """``results/<STAGE>.npz`` (if any array), then ``results/<STAGE>.json`` (last: it
        marks the reduction done)."""
        values, arrays = self.to_npz()
        folder = Path(root) / "results"
        folder.mkdir(parents=True, exist_ok=True)
        if arrays:
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            write_atomic(folder / f"{self.STAGE}.npz", buffer.getvalue())
        record = {"stage": self.STAGE, "title": title, "values": values,
                  "headline": self.headline(), "seconds": seconds}
        write_atomic(folder / f"{self.STAGE}.json", json.dumps(record, indent=1))

    @classmethod
    def load(cls: type[R], root: str | Path) -> R | None:
        """The stored result of ``STAGE`` under ``root``, or None before it is reduced."""
        folder = Path(root) / "results"
        path = folder / f"{cls.STAGE}.json"
        if not path.exists():
            return None
        values = json.loads(path.read_text())["values"]
        npz = folder / f"{cls.STAGE}.npz"
        arrays = dict(np.load(npz, allow_pickle=False)) if npz.exists() else {}
        return cls.from_npz(values, arrays)


def _kind(cls: type, name: str) -> str:
    hint = typing.get_type_hints(cls)[name]
    if typing.get_origin(hint) is dict:
        return "arrays" if typing.get_args(hint)[-1:] == (np.ndarray,) else "value"
    if hint is np.ndarray or np.ndarray in typing.get_args(hint):
        return "array"
    return "value"


def fmt(value: float | None) -> str:
    """A number for a headline or a table: three decimals, "–" for None.

    Example:
        >>> fmt(0.12345), fmt(None)
        ('0.123', '–')
    """
    return "–" if value is None else f"{value:.3f}"


def no_keys(session: Any) -> list[str]:
    return []


@dataclass(frozen=True)
class Stage:
    """One analysis of a study (see the module docstring).

    ``needs``: stages whose units or results this one reads (run first; in a shard, a stage
    waits until they are finished). ``store(session)``: where its units live (default: the
    session's :class:`~hooked_vlm.storage.UnitStore`). ``skip(session)``: why the stage
    cannot run with this session's data (None: it can). ``gradients``: compute runs with
    autograd on (default: under ``torch.no_grad()``).
    """

    name: str
    title: str
    keys: Callable[[Any], list[str]] = no_keys
    compute: Callable[[Any, str], Mapping[str, np.ndarray]] | None = None
    reduce: Callable[[Any, Store], Result] | None = None
    result: type[Result] | None = None
    needs: tuple[str, ...] = ()
    store: Callable[[Any], Store] | None = None
    skip: Callable[[Any], str | None] | None = None
    gradients: bool = False

    def __post_init__(self) -> None:
        if (self.reduce is None) != (self.result is None):
            raise TypeError(f"stage {self.name!r}: give reduce and its result class together")
        if self.result is not None and self.result.STAGE != self.name:
            raise TypeError(f"stage {self.name!r} reduces into {self.result.__name__}, whose "
                            f"STAGE is {self.result.STAGE!r}")

    def store_of(self, session: Any) -> Store:
        return self.store(session) if self.store is not None else session.units


@dataclass(frozen=True)
class Study:
    """A study (see the module docstring). ``session(config, out_dir, weights)``: with
    ``weights=False`` the model comes without weights (a driver whose units run elsewhere)."""

    name: str
    config: type
    session: Callable[[Any, Path, bool], Any]
    stages: tuple[Stage, ...]
    report: Callable[[Path], Path] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise TypeError(f"study {self.name!r}: stage names repeat: {names}")
        for stage in self.stages:
            late = [n for n in stage.needs if n not in names[: names.index(stage.name)]]
            if late:
                raise TypeError(f"stage {stage.name!r} needs {late}, which do not come before it")

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]

    def select(self, stages: str | Sequence[str | int] | None) -> list[str]:
        """:func:`select_stages` of this study (None: every stage)."""
        return self.stage_names() if stages is None else select_stages(stages,
                                                                        self.stage_names())

    def plan(self, session: Any, stages: Sequence[str] | None) -> tuple[list[str], list[str]]:
        """Stages to run, in order (the stages they need added, unless the session leaves them
        out), and notes saying why a stage was added or left out. A stage asked for by name
        that cannot run is an error."""
        explicit = stages is not None
        wanted, notes = list(self.select(stages)), []
        for name in wanted:  # grows as it goes: the needs of the needs too
            for need in self.stage(name).needs:
                if need not in wanted and self._skip(session, need) is None:
                    wanted.append(need)
                    notes.append(f"stage {name!r} needs {need!r}: running it too")
        runnable = []
        for name in wanted:
            reason = self._skip(session, name)
            if reason is None:
                runnable.append(name)
            elif explicit and name in self.select(stages):
                raise ConfigError(f"stage {name!r} cannot run: {reason}")
            else:
                notes.append(f"stage {name!r} skipped: {reason}")
        return [n for n in self.stage_names() if n in runnable], notes

    def _skip(self, session: Any, name: str) -> str | None:
        stage = self.stage(name)
        return stage.skip(session) if stage.skip is not None else None


def select_stages(stages: str | Sequence[str | int], known: Sequence[str]) -> list[str]:
    """Stage names from names or numbers from 1 (``"gap,flow"``, ``[1, 2]``), in ``known``'s
    order.

    Example:
        >>> select_stages("3,a", ["a", "b", "c"])
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
