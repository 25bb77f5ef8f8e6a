"""``hooked-vlm``: inspect a model's layout and hooks, run the demo and the studies, fine-tune.

Examples:
    hooked-vlm info                       # every supported family, its configs and tiny models
    hooked-vlm info tiny:chameleon
    hooked-vlm info llava-1.5-7b          # reads only the config: no weights are downloaded
    hooked-vlm explore --model tiny-native --image cat.png --task caption --out page.html
    hooked-vlm demo --out results/demo    # both studies on the embedded trained models
    hooked-vlm run narrow-gate --model chameleon-7b --data synthetic --n 64 --out results/ng
    hooked-vlm run narrow-gate ... --device cuda --ray auto       # on the Ray cluster of this node
    hooked-vlm run narrow-gate ... --shard 0/8                    # a Slurm array task
    hooked-vlm run head-attribution ... --ray auto                # mask store on Ray workers
    hooked-vlm run head-attribution ... --shard 0/8   (then --fit-only once all are in)
    hooked-vlm finetune --out results/tiny-native-ft      # LoRA, text→EOI attention masked
    hooked-vlm finetune --out results/gated --mask-keys image   # text→image masked: plants a gate

Heavy libraries (torch, transformers, TransformerLens) are imported inside the commands that
use them, so ``hooked-vlm --help`` answers at once.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer

from hooked_vlm.cli_explore import explore_command
from hooked_vlm.studies import DEMO_CHOICES, DEMO_DEFAULT

app = typer.Typer(add_completion=False, help=__doc__, no_args_is_help=True)
run_app = typer.Typer(
    help="Run a study into a results directory. Resumable: run the same command again after an "
    "interruption and finished work is kept.",
    no_args_is_help=True,
)
app.add_typer(run_app, name="run")
app.command("explore")(explore_command)  # its logic: hooked_vlm/cli_explore.py

def _console() -> Any:
    from rich.console import Console

    return Console()


def _quiet_libraries() -> None:
    """No per-file progress bars of transformers (weights) and datasets (casting): the
    studies' own bars say what is going on."""
    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def _model_for_info(name: str) -> tuple[Any, dict | None]:
    """A tiny model (``tiny:NAME``), or a real one built on the meta device from its config."""
    import torch
    import transformers

    from hooked_vlm import loading
    from hooked_vlm.families import TINY_BUILDERS, build_tiny
    from hooked_vlm.model import HookedVLM

    if name.startswith("tiny:"):
        tiny = build_tiny(name.removeprefix("tiny:"))
        frames = tiny.extras.get("video_frames")  # frames that are images: say so (SmolVLM)
        layout_inputs = {**tiny.inputs, **({"video_frames": frames} if frames else {})}
        return HookedVLM.from_hf(tiny.model), layout_inputs
    try:
        source = loading.resolve_source(name)
        config = transformers.AutoConfig.from_pretrained(
            source.location, local_files_only=source.local
        )
    except (OSError, ValueError, KeyError) as err:
        _console().print(
            f"[red]could not read the config of {name!r}[/]: {err}\n`info` reads "
            "only config.json, from the HF hub (network) or a local save_pretrained directory. "
            f"Offline, try a built-in tiny model: tiny:{', tiny:'.join(TINY_BUILDERS)}."
        )
        raise typer.Exit(code=1) from None
    arch = loading.get_architecture((config.architectures or ["?"])[0])
    with torch.device("meta"):
        hf_model = getattr(transformers, arch.hf_class)(config)
    return HookedVLM.from_hf(hf_model, model_config=source.model_config), None


def _hook_patterns(names: list[str]) -> list[str]:
    """Collapse per-layer names: ``blocks.3.attn.hook_z`` -> ``blocks.{l}.attn.hook_z``."""
    seen: dict[str, None] = {}
    for n in names:
        seen[re.sub(r"(blocks|encoder_layers|layers)\.\d+\.", r"\1.{l}.", n)] = None
    return list(seen)


def _families_table() -> Any:
    """Every supported family: HF class, kind, model configs and tiny instances."""
    from rich.table import Table

    from hooked_vlm.families import ARCHITECTURES
    from hooked_vlm.model_configs import list_model_configs, load_model_config

    configs: dict[str, list[str]] = {}
    for name in list_model_configs():
        configs.setdefault(load_model_config(name).architecture, []).append(name)
    table = Table(title="supported families (hooked-vlm info NAME for one of them)")
    for column in ("family", "HF class", "kind", "model configs", "tiny instances"):
        table.add_column(column)
    for arch in sorted(ARCHITECTURES.values(), key=lambda a: a.family.lower()):
        table.add_row(
            arch.family, arch.hf_class, "native" if arch.native else "encoder",
            ", ".join(configs.get(arch.hf_class, [])) or "-",
            ", ".join(f"tiny:{t}" for t in arch.tiny) or "-",
        )
    return table


@app.command()
def info(
    model: Annotated[
        str | None,
        typer.Argument(help="tiny:NAME, a model-config name, dir or HF id; none: every family"),
    ] = None,
):
    """Show a model's sizes, special tokens, token layout and hook names (no argument: list
    every supported family with its model configs and tiny instances)."""
    from rich.table import Table

    console = _console()
    if model is None:
        console.print(_families_table())
        return
    vlm, inputs = _model_for_info(model)
    c = vlm.cfg
    table = Table(title=f"{model}: {c.architecture}", show_header=False)
    for key, value in vars(c).items():
        table.add_row(key, str(value))
    tokens = vlm.architecture.tokens(vlm.hf_model.config)
    table.add_row("special tokens", ", ".join(f"{k}={v}" for k, v in vars(tokens).items()))
    table.add_row("layout", vlm.architecture.notes)
    table.add_row("gate candidate", vlm.architecture.gate)
    console.print(table)
    if inputs is not None:
        layout = vlm.layout(**inputs)
        groups = Table(title="token layout of the example (batch element 0)")
        groups.add_column("group")
        groups.add_column("positions")
        for name, mask in layout.masks.items():
            groups.add_row(name, _ranges(mask[0].nonzero().flatten().tolist()))
        for k in range(layout.frames()[0]):
            groups.add_row(f"image@frame={k}", _ranges(
                layout.mask("image", frame=k)[0].nonzero().flatten().tolist()))
        if layout.attention_blocks is not None:
            bidirectional = (layout.attention_blocks[0] >= 0).nonzero().flatten().tolist()
            groups.add_row("bidirectional", _ranges(bidirectional))
        for injection in layout.injections:
            groups.add_row(f"injected by {injection.hook}", _ranges(
                layout.mask(injection.group)[0].nonzero().flatten().tolist()))
        console.print(groups)
    hooks = Table(title=f"hook names ({len(vlm.hook_names)} in all; {{l}} = layer)")
    hooks.add_column("name")
    for pattern in _hook_patterns(vlm.hook_names):
        hooks.add_row(pattern)
    console.print(hooks)


def _ranges(positions: list[int]) -> str:
    """``[1,2,3,7]`` -> ``"1-3, 7"``."""
    out, start = [], None
    for i, p in enumerate(positions):
        start = p if start is None else start
        if i + 1 == len(positions) or positions[i + 1] != p + 1:
            out.append(f"{start}-{p}" if p != start else str(p))
            start = None
    return ", ".join(out) or "-"


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="results directory (resumable)")] = Path(
        "results/demo"
    ),
    models: Annotated[
        str, typer.Option(help=f"comma-separated embedded models: {', '.join(DEMO_CHOICES)}")
    ] = ",".join(DEMO_DEFAULT),
    n: Annotated[int, typer.Option(help="Narrow Gate examples per task", min=2)] = 64,
    attribution_n: Annotated[int, typer.Option(help="head-attribution examples", min=2)] = 8,
    masks: Annotated[int, typer.Option(help="random head masks per example", min=2)] = 256,
    seed: Annotated[int, typer.Option(help="seed of both studies")] = 0,
):
    """Both studies on the embedded trained tiny models (no download), one comparison page."""
    from rich.table import Table

    from hooked_vlm.studies.demo import DemoConfig, run_demo
    from hooked_vlm.studies.demo.report import attribution_table, contrast_table

    try:  # checked before anything is written
        config = DemoConfig(models=tuple(m.strip() for m in models.split(",") if m.strip()),
                            n=n, attribution_n=attribution_n, masks=masks, seed=seed)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    console = _console()
    _quiet_libraries()
    import torch

    # d_model 128: more threads only add synchronisation (and spin on a busy machine)
    torch.set_num_threads(1)
    with _RichProgress(console) as progress:
        try:
            summary = run_demo(config, out, progress, log=console.print)
        except ValueError as err:  # another demo's directory: say so instead of a traceback
            progress.stop()
            console.print(f"[red]cannot run[/]: {err}")
            raise typer.Exit(code=1) from None
    for title, made in (("The Narrow Gate contrast", contrast_table(summary.rows)),
                        ("Head attribution", attribution_table(summary.rows))):
        table = Table(title=f"{title} on the embedded models", caption=made.caption)
        for column in made.columns:
            table.add_column(column)
        for row in made.rows:
            table.add_row(*map(str, row))
        console.print(table)
    console.print(f"report: [bold]{summary.report}[/] (links to each study's full report)")


# the engine options every study takes (hooked_vlm.engines)
RayOption = Annotated[
    str | None,
    typer.Option(help="run the units on Ray workers that load the model once each: auto (the "
                 "cluster of this node: `ray start` ran here or RAY_ADDRESS is set), local "
                 "(a new cluster on this machine), host:port or ray://host:10001. Needs "
                 "pip install 'hooked-vlm[ray]'"),
]
WorkersOption = Annotated[
    int | None, typer.Option(help="Ray workers (default: one per GPU of the cluster; with "
                             "--device cpu one per CPU)")
]
GpusOption = Annotated[
    float | None, typer.Option(help="GPUs per Ray worker (default: 1 with a cuda device, "
                               "else 0; more for a model spread with device_map)")
]


@app.command()
def finetune(
    out: Annotated[Path, typer.Option(help="checkpoint directory to write (with finetune.json)")],
    model: Annotated[
        str, typer.Option(help="native model with an EOI token: model-config name or directory")
    ] = "tiny-native",
    model_config: Annotated[
        str | None, typer.Option(help="model-config name for a checkpoint directory")
    ] = None,
    full: Annotated[bool, typer.Option(help="update every decoder weight instead of LoRA")]
    = False,
    steps: Annotated[int | None, typer.Option(help="optimiser steps (default: 200)")] = None,
    rank: Annotated[int | None, typer.Option(help="LoRA rank (default: 8; not with --full)")]
    = None,
    lr: Annotated[
        float | None, typer.Option(help="peak learning rate (default: LoRA 2e-3, full 3e-4)")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="conversations per step (default: 16)")
    ] = None,
    n_train: Annotated[
        int | None, typer.Option(help="synthetic training images (default: 4000)")
    ] = None,
    n_eval: Annotated[
        int | None, typer.Option(help="held-out test images, before and after (default: 256)")
    ] = None,
    mask: Annotated[
        bool, typer.Option(help="mask attention while training (--no-mask: the control)")
    ] = True,
    mask_keys: Annotated[
        str | None,
        typer.Option(help='keys hidden from text after the image while training: "eoi" '
                     '(default, the paper\'s run) or "image" (image tokens: plants a gate)'),
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of batches and weights")] = 0,
):
    """Fine-tune a native model with text→EOI attention masked (Narrow Gate, NeurIPS);
    --mask-keys image masks text→image tokens instead (plants a gate at EOI).

    Trains on the synthetic shapes data with the EOI knockout active, then compares held-out
    accuracy and the EOI / image-token knockout effect before and after. Writes a merged
    checkpoint: HookedVLM.from_pretrained(OUT, model_config="tiny-native")."""
    import torch

    from hooked_vlm.loading import ModelSourceError
    from hooked_vlm.training.finetune import FinetuneError
    from hooked_vlm.training.finetune import finetune as run_finetune

    console = _console()
    _quiet_libraries()
    # the synthetic data fit tiny-native's word vocabulary: d_model 128, more threads only add
    # synchronisation (and spin on a busy machine)
    torch.set_num_threads(1)
    given = {"steps": steps, "rank": rank, "lr": lr, "batch_size": batch_size,
             "n_train": n_train, "n_eval": n_eval, "masked_keys": mask_keys}
    options = {"full": full, "mask": mask, **{k: v for k, v in given.items() if v is not None}}
    try:
        report = run_finetune(model, out, model_config=model_config, seed=seed,
                              log=console.print, **options)
    except (FinetuneError, ModelSourceError) as err:
        console.print(f"[red]cannot fine-tune[/]: {err}")
        raise typer.Exit(code=2) from None
    console.print(_finetune_table(report))
    console.print(f"checkpoint and finetune.json in {out}/ (load with HookedVLM.from_pretrained("
                  f"{str(out)!r}, model_config={report['model_config']!r}))")


def _finetune_table(report: dict[str, Any]) -> Any:
    """Before/after rows of a fine-tuning report: held-out accuracy and knockout effects."""
    from rich.table import Table

    from hooked_vlm.training.finetune import summary_rows

    masked = report.get("masked")
    trained = f"text→{masked} masked" if masked else "no mask"
    table = Table(title=f"held-out, before → after fine-tuning ({trained}; knockouts: queries "
                        "after the image, every layer)")
    table.add_column("measure")
    table.add_column("before")
    table.add_column("after")
    before, after = summary_rows(report["before"]), summary_rows(report["after"])
    for label, value in before.items():
        table.add_row(label, f"{value:.3f}", f"{after[label]:.3f}")
    return table


@run_app.command("narrow-gate")
def narrow_gate(
    out: Annotated[Path, typer.Option(help="results directory (resumable; one config per dir)")],
    model: Annotated[
        str | None, typer.Option(help="model-config name, local save_pretrained dir or HF id")
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(help='data of every task: hub id, local dir/file or "synthetic" (per-task '
                     "sources: in --config)"),
    ] = None,
    n: Annotated[int | None, typer.Option(help="examples per task (default: 64)")] = None,
    config: Annotated[
        Path | None, typer.Option(help="study YAML (fields of NarrowGateConfig); options win")
    ] = None,
    model_config: Annotated[
        str | None, typer.Option(help="model-config name or YAML for a local model directory")
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: cpu)")] = None,
    dtype: Annotated[str | None, typer.Option(help="float32, bf16, fp16 (default: the model's)")]
    = None,
    batch_size: Annotated[int | None, typer.Option(help="examples per forward (default: 8)")]
    = None,
    stages: Annotated[
        str | None,
        typer.Option(help="comma-separated stages or numbers 1-7: gap, flow, overlap, knockout, "
                     "progressive, patching, steering (default: all the data allows)"),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="seed of examples and draws (default: 0)")]
    = None,
    ray: RayOption = None,
    workers: WorkersOption = None,
    gpus_per_worker: GpusOption = None,
    shard: Annotated[
        str | None,
        typer.Option(help="i/N: compute block i of N of each stage's units and stop (a Slurm "
                     "array task: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT); then "
                     "the same command without --shard reduces and writes the report"),
    ] = None,
):
    """The Narrow Gate study (Serra et al.), seven stages and an HTML report.

    Modality gap, attention flow, label overlap, knockouts, patching and steering at the
    image's gate token (EOI, or the last image token). Resumes where a run stopped."""
    from hooked_vlm.engines import parse_shard
    from hooked_vlm.studies.narrow_gate.config import ConfigError, NarrowGateConfig

    given = {"model": model, "data": data, "n": n, "model_config": model_config,
             "device": device, "dtype": dtype, "batch_size": batch_size, "stages": stages,
             "seed": seed}
    console = _console()
    try:
        if config is not None:
            study = NarrowGateConfig.from_yaml(config, **given)
        else:
            study = NarrowGateConfig.from_dict({k: v for k, v in given.items() if v is not None})
        engine = _engine(ray, workers, gpus_per_worker, study.device)
        parts = None if shard is None else parse_shard(shard)
    except (ConfigError, OSError, TypeError, ValueError) as err:
        _print_error(console, "invalid study configuration", err)
        raise typer.Exit(code=2) from None
    except ImportError as err:  # --ray without Ray installed
        _print_error(console, "cannot run", err)
        raise typer.Exit(code=1) from None
    _run_narrow_gate(study, out, console, engine, parts)


def _print_error(console: Any, title: str, err: object) -> None:
    """``title: err`` in red; the message is escaped (rich would swallow ``hooked-vlm[ray]``)."""
    from rich.markup import escape

    console.print(f"[red]{title}[/]: {escape(str(err))}")


def _engine(ray: str | None, workers: int | None, gpus: float | None, device: str) -> Any:
    """The Ray engine of ``--ray`` (None: this process); Ray missing is an error here, before
    any model loads."""
    from hooked_vlm.engines import RayEngine
    from hooked_vlm.engines.ray_engine import import_ray

    if ray is None:
        if workers is not None or gpus is not None:
            raise ValueError("--workers and --gpus-per-worker set up Ray workers: add --ray")
        return None
    import_ray()
    if gpus is None:
        gpus = 1 if device.startswith("cuda") else 0
    return RayEngine(address=ray, workers=workers, gpus_per_worker=gpus)


def _run_narrow_gate(
    study: Any, out: Path, console: Any, engine: Any, shard: tuple[int, int] | None
) -> None:
    from rich.table import Table

    from hooked_vlm.engines import EngineError
    from hooked_vlm.studies.narrow_gate import ConfigError, run_narrow_gate

    _quiet_libraries()
    with _RichProgress(console) as progress:
        try:
            summary = run_narrow_gate(study, out, progress, engine=engine, shard=shard)
        # a bad config, model path or data source, Ray missing or its workers failing to start:
        # a clear message instead of a traceback
        except (ConfigError, ValueError, KeyError, OSError, ImportError, EngineError) as err:
            progress.stop()
            _print_error(console, "cannot run", f"{type(err).__name__}: {err}")
            raise typer.Exit(code=1) from None
    if shard is not None:
        for note in summary.notes[1:]:
            console.print(f"[yellow]note[/]: {note}")
        computed = sum(t.computed for t in summary.timings.values())
        console.print(f"shard {shard[0]}/{shard[1]}: {computed} unit(s) computed in "
                      f"{', '.join(summary.timings) or 'no stage'}. When every shard is in, run "
                      "the same command without --shard: it computes anything still missing, "
                      "reduces every stage and writes the report.")
        return
    table = Table(title=f"Narrow Gate: {study.model}")
    for column in ("stage", "result", "value", "compute s"):
        table.add_column(column)
    for stage, rows in summary.headline.items():
        timing = summary.timings[stage]
        seconds = f"{timing.unit_seconds + timing.reduce_seconds:.1f}"
        for i, (label, value) in enumerate(rows):
            table.add_row(stage if i == 0 else "", label, value, seconds if i == 0 else "")
    console.print(table)
    console.print(f"gate: {summary.notes[0]}")
    for note in summary.notes[1:]:
        console.print(f"[yellow]note[/]: {note}")
    console.print(f"report: [bold]{summary.report}[/]")


@run_app.command("head-attribution")
def head_attribution(
    out: Annotated[Path, typer.Option(help="results directory (resumable; one config per dir)")],
    model: Annotated[
        str | None, typer.Option(help="model-config name, local save_pretrained dir or HF id")
    ] = None,
    data: Annotated[
        str | None, typer.Option(help='hub id, local dir/file or "synthetic"')
    ] = None,
    n: Annotated[int | None, typer.Option(help="examples (default: 64)")] = None,
    masks: Annotated[
        int | None, typer.Option(help="random head masks per example (default: 2000)")
    ] = None,
    alpha: Annotated[
        float | None, typer.Option(help="probability each head is ablated (default: 0.5)")
    ] = None,
    k: Annotated[int | None, typer.Option(help="ablate exactly k heads per mask (not alpha)")]
    = None,
    heldout: Annotated[
        int | None, typer.Option(help="fresh masks that score the fit (default: 200)")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="study YAML (fields of HeadAttributionConfig); options win"),
    ] = None,
    model_config: Annotated[
        str | None, typer.Option(help="model-config name or YAML for a local model directory")
    ] = None,
    task: Annotated[
        str | None, typer.Option(help="classify (default), vqa or caption: prompt and answer")
    ] = None,
    mode: Annotated[
        str | None, typer.Option(help="baseline_kv (default), zero, mean or knockout")
    ] = None,
    baseline: Annotated[str | None, typer.Option(help="mean (default), blank or zeros")] = None,
    target: Annotated[str | None, typer.Option(help="logit (default), logprob or logit_diff")]
    = None,
    regression: Annotated[str | None, typer.Option(help="ols (default), ridge or lasso")]
    = None,
    top_k: Annotated[
        str | None, typer.Option(help="head counts of the curves, e.g. 1,2,4,8 (default: "
                                 "powers of two up to every head)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="seed of examples and masks (default: 0)")]
    = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: cpu)")] = None,
    dtype: Annotated[str | None, typer.Option(help="float32, bf16, fp16 (default: the model's)")]
    = None,
    batch_size: Annotated[int | None, typer.Option(help="masks per forward (default: 16)")]
    = None,
    stages: Annotated[
        str | None,
        typer.Option(help="comma-separated stages or numbers 1-6: masks, fit, baselines, "
                     "curves, tokens, consistency (default: all)"),
    ] = None,
    shard: Annotated[
        str | None,
        typer.Option(help="i/N: fill only block i of N of the mask store (a Slurm array task: "
                     "--shard $SLURM_ARRAY_TASK_ID/N); then --fit-only"),
    ] = None,
    fit_only: Annotated[
        bool, typer.Option("--fit-only", help="fit and report once every shard is in")
    ] = False,
    ray: RayOption = None,
    workers: WorkersOption = None,
    gpus_per_worker: GpusOption = None,
):
    """Head attribution (Kim et al. 2025): which heads carry image information to the text.

    Random multi-head ablations into a resumable store, a linear fit scored on held-out masks,
    leave-one-out and attention-weight baselines, faithfulness/completeness and top-k vs
    random-k, text positions and image tokens inside the top heads, class consistency."""
    from hooked_vlm.studies.common import ConfigError
    from hooked_vlm.studies.head_attribution.config import HeadAttributionConfig

    given = {"model": model, "data": data, "n": n, "masks": masks, "alpha": alpha, "k": k,
             "heldout": heldout, "model_config": model_config, "task": task, "mode": mode,
             "baseline": baseline, "target": target, "regression": regression,
             "top_k": None if top_k is None else _int_list(top_k, "--top-k"), "seed": seed,
             "device": device, "dtype": dtype, "batch_size": batch_size, "stages": stages}
    console = _console()
    try:
        if config is not None:
            study = HeadAttributionConfig.from_yaml(config, **given)
        else:
            study = HeadAttributionConfig.from_dict(
                {key: v for key, v in given.items() if v is not None})
        if shard is not None:
            from hooked_vlm.attribution import parse_shard

            parse_shard(shard)
        engine = _engine(ray, workers, gpus_per_worker, study.device)
        if engine is not None and fit_only:
            raise ValueError("--fit-only evaluates no mask: it fits and reports in this "
                             "process; drop --ray")
    except (ConfigError, ValueError, OSError, TypeError) as err:
        _print_error(console, "invalid study configuration", err)
        raise typer.Exit(code=2) from None
    except ImportError as err:  # --ray without Ray installed
        _print_error(console, "cannot run", err)
        raise typer.Exit(code=1) from None
    _run_head_attribution(study, out, console, shard, fit_only, engine)


def _int_list(text: str, option: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"{option} takes comma-separated integers, got {text!r}") from None


def _run_head_attribution(
    study: Any, out: Path, console: Any, shard: str | None, fit_only: bool, engine: Any
) -> None:
    from rich.table import Table

    from hooked_vlm.engines import EngineError
    from hooked_vlm.studies.head_attribution import (
        ConfigError,
        OnEngine,
        fill_store,
        run_head_attribution,
    )

    _quiet_libraries()
    masks = fill_store if engine is None else OnEngine(engine)
    with _RichProgress(console) as progress:
        try:
            summary = run_head_attribution(study, out, progress, shard=shard, fit_only=fit_only,
                                           engine=masks)
        except (ConfigError, ValueError, KeyError, OSError, ImportError, EngineError) as err:
            progress.stop()
            _print_error(console, "cannot run", f"{type(err).__name__}: {err}")
            raise typer.Exit(code=1) from None
    setting = (f"alpha {study.alpha}" if study.alpha is not None else f"k {study.k}")
    table = Table(title=f"Head attribution: {study.model} ({setting}, N {study.masks} + "
                  f"{study.heldout} held out, {study.regression})")
    for column in ("stage", "result", "value", "s"):
        table.add_column(column)
    for stage, rows in summary.headline.items():
        timing = summary.timings[stage]
        seconds = f"{timing.wall_seconds:.1f}"
        for i, (label, value) in enumerate(rows):
            table.add_row(stage if i == 0 else "", label, value, seconds if i == 0 else "")
    console.print(table)
    for note in summary.notes:
        console.print(f"[yellow]note[/]: {note}")
    if summary.report is not None:
        console.print(f"report: [bold]{summary.report}[/]")


class _RichProgress:
    """The study's progress callbacks as one rich progress bar per stage."""

    def __init__(self, console: Any) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self.console = console
        self.bars = Progress("[progress.description]{task.description}", BarColumn(),
                             MofNCompleteColumn(), TimeElapsedColumn(), console=console)
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> _RichProgress:
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    def stop(self) -> None:
        self.bars.stop()

    def stage(self, name: str, title: str, total: int) -> None:
        for task in self.tasks.values():  # the previous stage is over: stop its clock
            self.bars.stop_task(task)
        self.tasks[name] = self.bars.add_task(title, total=total)

    def advance(self, name: str, unit: Any, computed: bool) -> None:
        self.bars.advance(self.tasks[name])

    def note(self, text: str) -> None:
        self.console.print(f"[yellow]note[/]: {text}")


if __name__ == "__main__":
    app()
