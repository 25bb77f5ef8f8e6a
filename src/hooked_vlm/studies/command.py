"""The command line of a study, generated from its config: ``hooked-vlm run <study> ...``.

Every field of the study's config (nested settings' fields flat, e.g. head attribution's
``--masks``) becomes an option of its type, with the field's docstring as help and the
config's default; ``--config study.yaml`` reads the same names from a file (options win).
Every study also takes where it runs: ``--out``, ``--shard i/N``, ``--ray ADDRESS``,
``--workers``, ``--gpus-per-worker``. Errors are one line: what was wrong and what is accepted.

``hooked-vlm run`` lists the registered studies without importing them (``--help`` stays
instant); ``hooked-vlm run my_module:STUDY`` runs a study of your own. In a script,
``study_app(STUDY)()`` is the same command line.

Example:
    >>> app = study_app(NARROW_GATE)      # a typer.Typer: app(["--model", "tiny-native", ...])
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import click
import typer
from rich.markup import escape  # square brackets are rich markup: hooked-vlm[ray]
from typer.core import TyperGroup

from hooked_vlm.settings import ConfigError
from hooked_vlm.studies.registry import STUDIES, get_config, get_study

RUN_HELP = ("Run a study into a results directory. Resumable: run the same command again after "
            "an interruption and finished work is kept. A study of your own: module:STUDY.")
RUN_PANEL, STUDY_PANEL = "Where and how it runs", "Study options (also in --config)"


# ---------------------------------------------------------------------- options from a config
def _options(hint: Any) -> list[Any]:
    """The types a hint allows, None left out: ``int | None`` -> ``[int]``."""
    union = typing.get_origin(hint) in (Union, types.UnionType)
    return [a for a in typing.get_args(hint) if a is not type(None)] if union else [hint]


def _cli_type(hint: Any) -> tuple[Any, bool]:
    """The option's Python type for typer, and whether it is a flag (``--x/--no-x``)."""
    inner = _options(hint)
    single = inner[0] if len(inner) == 1 else None
    if single is bool:
        return bool, True
    if single in (int, float, str):
        return single, False
    return str, False  # lists, mappings, choices: text the config layer parses


def parse_text(name: str, hint: Any, text: str) -> Any:
    """An option's text as the config field ``name`` of type ``hint`` wants it: a list from
    ``"1,2,4"``, a mapping from ``"caption=test,vqa=val"``; the text itself where the field
    takes a string (the config parses it, e.g. ``stages``).

    Example:
        >>> parse_text("top_k", tuple[int, ...] | None, "1,2,4")
        [1, 2, 4]
    """
    options = _options(hint)
    if str in options or any(typing.get_origin(o) is Literal for o in options):
        return text
    for option in options:
        origin, args = typing.get_origin(option), typing.get_args(option)
        if origin is tuple:
            kind = args[0] if args else str
            parts = [p.strip() for p in text.split(",") if p.strip()]
            try:
                return [kind(p) if kind in (int, float) else p for p in parts]
            except ValueError:
                raise ConfigError(f"--{_flag(name)} takes comma-separated "
                                  f"{kind.__name__}s, got {text!r}") from None
        if origin in (dict, Mapping):
            pairs = [p.split("=", 1) for p in text.split(",") if p.strip()]
            if any(len(p) != 2 for p in pairs):
                raise ConfigError(f"--{_flag(name)} takes key=value pairs separated by commas "
                                  f"(e.g. caption=test,vqa=validation), got {text!r}")
            return {k.strip(): v.strip() for k, v in pairs}
    return text


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _defaults(config: type) -> dict[str, Any]:
    """Each option's default (nested settings: the outer field's default instance's)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        if f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        elif f.default is not dataclasses.MISSING:
            value = f.default
        else:
            continue
        if dataclasses.is_dataclass(value):
            out.update(dataclasses.asdict(value))
        else:
            out[f.name] = value
    return out


def config_options(config: type, panel: str | None = STUDY_PANEL) -> list[inspect.Parameter]:
    """An option per field of ``config`` (typed, its docstring as help, shown under ``panel``),
    each None unless given: :func:`config_from` builds the config."""
    docs, defaults = config.field_docs(), _defaults(config)
    aliases: dict[str, list[str]] = {}
    for holder in [config, *(typing.get_type_hints(config)[f.name] for f in
                             dataclasses.fields(config))]:
        for alias, target in getattr(holder, "ALIASES", {}).items():
            aliases.setdefault(target, []).append(alias)
    params = []
    for name, hint in config.option_hints().items():
        kind, flag = _cli_type(hint)
        default = defaults.get(name, dataclasses.MISSING)
        shown = ("required (here or in --config)" if default is dataclasses.MISSING
                 else f"default: {_show(default)}")
        choices = typing.get_args(hint) if typing.get_origin(hint) is Literal else ()
        help_text = docs.get(name, "") + (f" One of: {', '.join(choices)}." if choices else "")
        decls = [f"--{_flag(name)}/--no-{_flag(name)}" if flag else f"--{_flag(name)}",
                 *(f"--{_flag(a)}" for a in aliases.get(name, []))]
        option = typer.Option(*decls, help=escape(f"{help_text} [{shown}]"),
                              rich_help_panel=panel, show_default=False)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Annotated[kind | None, option]))
    return params


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return "none" if value is None else str(value)


_RUN_OPTIONS = {
    "out": (Path, typer.Option("--out", help="results directory (resumable; one configuration "
                               "per directory)", rich_help_panel=RUN_PANEL)),
    "config": (Path | None, typer.Option("--config", help="study YAML with any of the study "
                                         "options below (command-line options win)",
                                         rich_help_panel=RUN_PANEL)),
    "shard": (str | None, typer.Option("--shard", help=escape(
        "i/N: compute block i of N of each stage's units and stop (a Slurm array task: --shard "
        "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT); then the same command without --shard "
        "computes anything still missing, reduces and writes the report"),
        rich_help_panel=RUN_PANEL)),
    "ray": (str | None, typer.Option("--ray", help=escape(
        "run the units on Ray workers that load the model once each: auto (the cluster of this "
        "node: `ray start` ran here or RAY_ADDRESS is set), local (a new cluster on this "
        "machine), host:port or ray://host:10001. Needs pip install 'hooked-vlm[ray]'"),
        rich_help_panel=RUN_PANEL)),
    "workers": (int | None, typer.Option("--workers", help="Ray workers (default: one per GPU "
                                         "of the cluster; with --device cpu one per CPU)",
                                         rich_help_panel=RUN_PANEL)),
    "gpus_per_worker": (float | None, typer.Option(
        "--gpus-per-worker", help="GPUs per Ray worker (default: 1 with a cuda device, else 0; "
        "more for a model spread with device_map)", rich_help_panel=RUN_PANEL)),
}


def study_app(study: Any) -> typer.Typer:
    """A typer app running ``study`` (its options from the study's config).

    Example:
        >>> if __name__ == "__main__":          # a script: python my_study.py --out ... --n 4
        ...     study_app(STUDY)()
    """
    shipped = STUDIES[study.name].help if study.name in STUDIES else study.name
    return study_command(study.name, study.config, study.description or shipped, lambda: study)


def study_command(name: str, config_cls: type, help_text: str, load: Any) -> typer.Typer:
    """The typer app of study ``name``: options from ``config_cls``; ``load()`` gives the
    :class:`~hooked_vlm.studies.Study` when it runs."""

    def command(**options: Any) -> None:
        from hooked_vlm.engines import Shard

        run = {k: options.pop(k) for k in _RUN_OPTIONS}
        try:
            config = config_from(config_cls, options, run["config"])
            engine = _engine(run["ray"], run["workers"], run["gpus_per_worker"],
                             getattr(config, "device", "cpu"))
            shard = None if run["shard"] is None else Shard.parse(run["shard"])
        except (ConfigError, ValueError) as err:
            _fail("invalid study configuration", err, 2)
        except ImportError as err:  # --ray without Ray installed
            _fail("cannot run", err, 1)
        try:
            study = load()
        except ConfigError as err:
            _fail("cannot run", err, 2)
        _run(study, config, run["out"], engine, shard)

    params = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                                default=None if name != "out" else inspect.Parameter.empty,
                                annotation=Annotated[kind, option])
              for name, (kind, option) in _RUN_OPTIONS.items()]
    params += config_options(config_cls)
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = escape(help_text)
    app = typer.Typer(add_completion=False, rich_markup_mode="rich")
    app.command(name)(command)
    return app


def config_from(config_cls: type, options: Mapping[str, Any], path: Path | None = None) -> Any:
    """The config of :func:`config_options`' values (None: not given) over YAML file ``path``.

    Example:
        >>> config_from(DemoConfig, {"models": "tiny-llava", "n": 16, "seed": None}).models
        ('tiny-llava',)
    """
    hints = config_cls.option_hints()
    given = {k: parse_text(k, hints[k], v) if isinstance(v, str) else v
             for k, v in options.items() if v is not None}
    return (config_cls.from_yaml(path, **given) if path is not None
            else config_cls.from_dict(given))


def _engine(ray: str | None, workers: int | None, gpus: float | None, device: str) -> Any:
    """The Ray engine of ``--ray`` (None: this process); Ray missing is an error here, before
    any model loads."""
    from hooked_vlm.engines import RayEngine
    from hooked_vlm.engines.ray_engine import import_ray

    if ray is None:
        if workers is not None or gpus is not None:
            raise ConfigError("--workers and --gpus-per-worker set up Ray workers: add --ray")
        return None
    import_ray()
    if gpus is None:
        gpus = 1 if device.startswith("cuda") else 0
    return RayEngine(address=ray, workers=workers, gpus_per_worker=gpus)


def _fail(title: str, err: object, code: int) -> typing.NoReturn:
    from rich.console import Console

    Console(stderr=False).print(f"[red]{title}[/]: {escape(str(err))}")
    raise typer.Exit(code=code)


def _run(study: Any, config: Any, out: Path, engine: Any, shard: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    from hooked_vlm.engines import EngineError
    from hooked_vlm.storage import StoreError
    from hooked_vlm.studies.runner import run_study

    console = Console()
    quiet_libraries()
    with RichProgress(console) as progress:
        try:
            summary = run_study(study, config, out, engine=engine, shard=shard,
                                progress=progress)
        except (ConfigError, StoreError, EngineError, OSError, ImportError) as err:
            progress.stop()
            _fail("cannot run", f"{type(err).__name__}: {err}" if isinstance(err, OSError)
                  else err, 1)
    if shard is not None:
        computed = sum(t.computed for t in summary.timings.values())
        console.print(f"shard {shard}: {computed} unit(s) computed in "
                      f"{', '.join(summary.timings) or 'no stage'}. When every shard is in, run "
                      "the same command without --shard: it computes anything still missing, "
                      "reduces every stage and writes the report.")
        return
    table = Table(title=f"{study.name}: {getattr(config, 'model', '')}")
    for column in ("stage", "result", "value", "compute s"):
        table.add_column(column)
    for stage, rows in summary.headline.items():
        timing = summary.timings[stage]
        seconds = f"{timing.unit_seconds + timing.reduce_seconds:.1f}"
        for i, (label, value) in enumerate(rows):
            table.add_row(stage if i == 0 else "", label, escape(value),
                          seconds if i == 0 else "")
    console.print(table)
    if summary.report is not None:
        console.print(f"report: [bold]{summary.report}[/]")


def quiet_libraries() -> None:
    """No per-file progress bars of transformers (weights) and datasets (casting): the
    studies' own bars say what is going on."""
    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


class RichProgress:
    """A study's progress callbacks as one rich progress bar per stage."""

    def __init__(self, console: Any) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self.console = console
        self.bars = Progress("[progress.description]{task.description}", BarColumn(),
                             MofNCompleteColumn(), TimeElapsedColumn(), console=console)
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> RichProgress:
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    def stop(self) -> None:
        self.bars.stop()

    def stage(self, name: str, title: str, total: int) -> None:
        for task in self.tasks.values():  # the previous stage is over: stop its clock
            self.bars.stop_task(task)
        self.tasks[name] = self.bars.add_task(escape(title), total=total)

    def advance(self, name: str, key: str, computed: bool) -> None:
        self.bars.advance(self.tasks[name])

    def note(self, text: str) -> None:
        self.console.print(f"[yellow]note[/]: {escape(text)}")


# ---------------------------------------------------------------------- `hooked-vlm run`
class _LazyStudy(click.Command):
    """A registered study, listed by name and one line of help; its options are built from
    its config only when it runs (or shows its own --help)."""

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help=help_text, short_help=help_text)
        self._real: click.Command | None = None

    def real(self) -> click.Command:
        if self._real is None:
            name = self.name or ""
            try:
                config = get_config(name)
            except ConfigError as err:
                _fail("cannot run", err, 2)
            app = study_command(name, config, self.help or name, lambda: get_study(name))
            self._real = typer.main.get_command(app)
        return self._real

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None,
                     **extra: Any) -> click.Context:
        return self.real().make_context(info_name, args, parent=parent, **extra)


class StudyGroup(TyperGroup):
    """``hooked-vlm run``: the registered studies, and ``module:STUDY`` for one's own."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *STUDIES]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        found = super().get_command(ctx, name)
        if found is not None:
            return found
        if name in STUDIES:
            return _LazyStudy(name, STUDIES[name].help)
        if ":" in name:
            return _LazyStudy(name, f"the study {name}")
        return None


def run_app() -> typer.Typer:
    """The ``run`` group of the command line."""
    return typer.Typer(cls=StudyGroup, help=RUN_HELP, no_args_is_help=True,
                       rich_markup_mode="rich")
